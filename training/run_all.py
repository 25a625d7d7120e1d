"""Runs the whole training chain: build the data, SFT, on-policy DPO rounds from the SFT
adapter, evaluate base / SFT / each DPO round.

    python -m training.run_all --out runs/full            # the configs in training/configs/
    python -m training.run_all --out /tmp/run --smoke     # every stage in smoke mode (minutes)

Each stage is its own module run as a child process (so each frees its memory); outputs
land in --out: data/, sft/, dpo/, evaluation.json and evaluation.md (the table).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from training.common import job_parser


def stage(name: str, job: ModuleType, args: list[str], log: Path) -> str:
    """Runs `python -m job args` in a child process; its stdout, or SystemExit if it failed."""
    started = time.perf_counter()
    command = [job.__name__, *args]
    print(f"== {name}: python -m {' '.join(command)}", flush=True)
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(f"== {name}\n{done.stdout}\n{done.stderr}\n")
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}); see {log}:\n{done.stderr[-2000:]}")
    print(
        f"   {time.perf_counter() - started:.0f} s: {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ''}"
    )
    return done.stdout


def main(argv: list[str] | None = None) -> None:
    from training.data import build_dialogues
    from training.dpo import on_policy
    from training.evaluation import evaluate
    from training.sft import dialogue as sft_dialogue

    parser = job_parser(__doc__, smoke="every stage in smoke mode")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval-limit", type=int, default=24, help="items per evaluation set")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "run.log"
    smoke = ["--smoke"] if args.smoke else []
    data, sft, dpo_out = out / "data", out / "sft", out / "dpo"
    stage("build data", build_dialogues, ["--out", str(data), *smoke], log)
    stage("SFT", sft_dialogue, ["--data", str(data), "--out", str(sft), *smoke], log)
    stage("on-policy DPO", on_policy, ["--data", str(data), "--adapter", str(sft), "--out", str(dpo_out), *smoke],
          log)  # fmt: skip
    rounds = sorted(dpo_out.glob("round*"), key=lambda p: int(p.name.removeprefix("round")))
    adapters = [f"sft={sft}", *(f"dpo-r{p.name.removeprefix('round')}={p}" for p in rounds)]
    limit = ["--smoke"] if args.smoke else ["--limit", str(args.eval_limit)]
    table = stage("evaluate", evaluate, ["--data", str(data), *(a for spec in adapters for a in ("--adapter", spec)),
                                         "--json", str(out / "evaluation.json"), *limit], log)  # fmt: skip
    (out / "evaluation.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
