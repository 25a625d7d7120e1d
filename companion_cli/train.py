"""`companion train JOB [ARGS]`: the training jobs of training/ behind the one command.

Each job is a module with `main(argv)` (also `python -m MODULE`); its arguments follow the
job's name, and `companion train JOB --help` lists them. Jobs run in this process.
"""

from __future__ import annotations

import argparse
import importlib
import sys

JOBS: dict[str, tuple[str, str]] = {
    "all": ("training.run_all", "data, SFT, DPO and the evaluation table, each in a child process"),
    "build-dialogues": ("training.data.build_dialogues", "multi-turn SFT, DPO and held-out evaluation sets"),
    "sft-dialogue": ("training.sft.dialogue", "a LoRA adapter on the built dialogues"),
    "sft-persona": ("training.sft.persona", "one persona's LoRA adapter (see also: companion persona train)"),
    "blend": ("training.sft.blend", "each persona's adapter plus a shared adapter's change, as one LoRA"),
    "sft-summarizer": ("training.sft.summarizer", "the generative summarizer's LoRA adapter"),
    "dpo": ("training.dpo.train", "DPO from an SFT adapter on the built (template) preference pairs"),
    "on-policy": (
        "training.dpo.on_policy",
        "on-policy DPO rounds: sample, judge, pair best with worst, train",
    ),
    "router": (
        "training.moe.router",
        "the MoE routers (load balance, experts-per-token target) with top-p routing",
    ),
    "experts": (
        "training.moe.experts",
        "the MoE's experts and routers vs a dense control on the same tokens",
    ),
    "emotion": ("training.classifiers.emotion", "reflection's emotion classifier (companion/weights)"),
    "reflection": (
        "training.classifiers.reflection",
        "reflection's learned gates: recall scorer and strategy model (companion/weights)",
    ),
    "reflection-heldout": (
        "training.evaluation.reflection_heldout",
        "reflection's decisions on held-out fact kinds, phrasings and request categories",
    ),
    "fast-summarizer": (
        "training.classifiers.fast_summarizer",
        "the fast summarizer's classifier (memory/weights)",
    ),
    "evaluate": ("training.evaluation.evaluate", "strategy and memory use of adapters on held-out dialogues"),
    "persona-style": (
        "training.evaluation.persona_style",
        "perplexity of held-out persona lines per adapter",
    ),
}


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    listing = "\n".join(f"  {name:16s} {text}" for name, (_, text) in JOBS.items())
    parser = sub.add_parser(
        "train",
        help="run a training job (companion train list)",
        description=__doc__.split("\n")[0] + "\n\njobs:\n" + listing,
        epilog="Example: companion train fast-summarizer --smoke",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job", metavar="JOB", help="a job name, or 'list'")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the job's own arguments")
    parser.set_defaults(handler=_run_job)


def job_main(name: str):
    """The `main(argv)` of job `name` (imported now: a job's libraries load only when it runs)."""
    return importlib.import_module(JOBS[name][0]).main


def _run_job(args: argparse.Namespace) -> int:
    if args.job == "list":
        for name, (module, text) in JOBS.items():
            print(f"{name:16s} {text}  [python -m {module}]")
        return 0
    if args.job not in JOBS:
        print(
            f"companion train: unknown job {args.job!r}; the jobs are {', '.join(JOBS)} (companion train list).",
            file=sys.stderr,
        )
        return 2
    from training.common import run

    try:
        return run(job_main(args.job), args.args)
    except SystemExit as e:  # argparse inside the job: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 1
