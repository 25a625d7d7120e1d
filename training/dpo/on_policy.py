"""On-policy multi-turn DPO: sample replies from the current adapter, rank them with the
judges, pair the best with the worst, train DPO, and go again from the new adapter.

    python -m training.dpo.on_policy --data runs/full/data --adapter runs/full/sft --out runs/full/dpo
    python -m training.dpo.on_policy --data DIR --from-base --out DIR --config training/configs/on_policy_from_base.yaml
    python -m training.dpo.on_policy --data DIR --adapter DIR --out DIR --smoke    # tiny rounds
    python -m training.dpo.on_policy --data DIR --adapter persona_adapters/adapters/mira --persona mira --out DIR

Each round:
1. draws fresh multi-turn contexts (the dialogue builder's sampler, training facts only:
   the held-out facts of `--data`'s build stay unseen) - a new draw every round;
2. samples `samples` replies per context from the current adapter (with `greedy`, the first
   of them decoded greedily, as the evaluation decodes, so that the policy's most likely
   reply - where loops show - is ranked too; with `loop_probe`, one more greedy reply
   without the repetition penalty, the mode where a policy's loops are most often seen),
   all at once through
   the `llamacpp` engine (continuous batching; the adapter is converted to GGUF once per
   round) or, with `engine: hf`, batched transformers generation (`training.dpo.sampling`);
3. scores every reply (`training.dpo.rewards`: post-check flags, grounding, support,
   persona voice, repetition, fluency under the frozen dense base model);
4. pairs each context's best reply with its worst where the rewards differ by at least
   `min_gap` (with `loop_pairs`, also with each reply that loops), and mixes in template
   pairs from `--data` as `template_share` of the set;
5. trains DPO (TRL) from the current adapter, which is also the round's frozen reference
   (with `sft_weight`, the chosen replies' NLL is added to the loss at that weight: RPO);
6. with `unlikelihood_steps`, then unlearns the round's own loops token by token
   (`training.dpo.unlikelihood`: every reply that repeats a 3-gram, beside its context's
   best reply; `unlikelihood_passes` caps the steps at that many passes over the loops;
   loops with no repeated token n-gram skip the pass, and the round summary says so).

Outputs: `--out`/round1, round2, ... (adapters), each with samples.jsonl (every reply and
its reward parts), pairs.jsonl, round_summary.json (the round's figures) and training_summary.json;
`--out`/summary.json holds every round's figures.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from companion.errors import ConfigError
from companion.prompting import persona_system_prompt
from companion.yaml_config import YamlConfig
from training.common import (
    CONFIGS,
    check,
    check_counts,
    job_parser,
    load_config,
    print_summary,
    run,
    settings_for,
    write_json,
)
from training.data.dialogues import (
    DialogueSample,
    dpo_row,
    load_bank,
    read_jsonl,
    sample_dialogues,
    write_jsonl,
)
from training.dpo.rewards import ReplyScorer, RewardWeights, ScoredReply
from training.dpo.sampling import sample_replies
from training.dpo.train import DPOTrainingConfig, train_dpo
from training.dpo.unlikelihood import NothingToUnlearn, UnlikelihoodConfig, train_unlikelihood
from training.evaluation.quality import repetition
from training.sft.lora import fresh_adapter

CONFIG = CONFIGS / "on_policy.yaml"
ENGINES = ("llamacpp", "hf")


@dataclass(frozen=True)
class OnPolicyConfig(YamlConfig):
    rounds: int = 2
    contexts: int = 160
    samples: int = 4
    temperature: float = 0.9
    top_p: float = 0.95
    max_new_tokens: int = 48
    min_gap: float = 1.0
    template_share: float = 0.2
    engine: str = "llamacpp"
    greedy: bool = False
    loop_probe: bool = False
    loop_pairs: bool = False
    fluency_weight: float = RewardWeights.fluency
    repetition_weight: float = RewardWeights.repetition
    persona_weight: float = RewardWeights.persona
    steps: int = 32
    batch_size: int = 2
    learning_rate: float = 5e-5
    beta: float = 0.1
    sft_weight: float = 0.0
    unlikelihood_steps: int = 0
    unlikelihood_passes: int = 0  # cap: at most this many passes over the round's loops (0 = none)
    max_length: int = 640
    seed: int = 0

    def __post_init__(self) -> None:
        check_counts(self, "rounds", "contexts", "steps", "batch_size", "max_new_tokens")
        check(self.samples >= 2, f"samples is {self.samples}; a pair needs at least 2 replies per context.")
        check(self.engine in ENGINES, f"engine is {self.engine!r}; expected one of {', '.join(ENGINES)}.")
        check(0 <= self.template_share < 1, f"template_share is {self.template_share}; expected [0, 1).")
        check(self.min_gap >= 0, f"min_gap is {self.min_gap}; expected >= 0.")
        check(
            self.unlikelihood_steps >= 0,
            f"unlikelihood_steps is {self.unlikelihood_steps}; expected >= 0 (0 = off).",
        )
        check(
            self.unlikelihood_passes >= 0,
            f"unlikelihood_passes is {self.unlikelihood_passes}; expected >= 0 (0 = no cap).",
        )
        for name in ("fluency_weight", "repetition_weight", "persona_weight", "sft_weight"):
            check(getattr(self, name) >= 0, f"{name} is {getattr(self, name)}; expected >= 0.")

    def weights(self) -> RewardWeights:
        return RewardWeights(
            fluency=self.fluency_weight, repetition=self.repetition_weight, persona=self.persona_weight
        )


@dataclass(frozen=True)
class Build:
    """What the rounds take from a build_dialogues output folder, read once."""

    personas: list  # Persona objects, as the build drew them
    facts: list[dict]  # the facts it trained on (never its held-out ones)
    template_pairs: list[dict]  # its dpo.jsonl rows

    @classmethod
    def read(cls, data: Path, registry, only: list[str] | None = None) -> Build:
        """The build in `data`; with `only`, just those personas' contexts and template pairs."""
        report_path = data / "report.json"
        if not report_path.is_file():
            raise ConfigError(f"{report_path} is missing; --data must be a build_dialogues output folder.")
        built = json.loads(report_path.read_text(encoding="utf-8"))["config"]
        missing = sorted(set(only or ()) - set(built["personas"]))
        if missing:
            raise ConfigError(f"{data} was built for personas {built['personas']}, not {missing}.")
        personas = [registry.get(p) for p in only or built["personas"]]
        theirs = {persona_system_prompt(p) for p in personas}  # a pair's prompt opens with its persona's
        heldout = set(built["heldout_facts"])
        return cls(
            personas=personas,
            facts=[f for f in load_bank()["facts"] if f["id"] not in heldout],
            template_pairs=[r for r in read_jsonl(data / "dpo.jsonl") if r["prompt"][0]["content"] in theirs],
        )


def round_contexts(build: Build, config: OnPolicyConfig, round_no: int) -> list[DialogueSample]:
    """Fresh contexts for one round (a new draw each round), from the build's training facts."""
    return sample_dialogues(
        build.personas, load_bank(), n=config.contexts, seed=config.seed + 7919 * round_no, facts=build.facts
    )


def best_worst_pairs(
    contexts: list[DialogueSample],
    scored: list[list[ScoredReply]],
    registry,
    min_gap: float,
    loop_pairs: bool = False,
) -> list[dict]:
    """One DPO row per context whose best and worst replies differ by at least `min_gap`; with
    `loop_pairs`, also one against each other reply that repeats itself (repeated 3-grams) and
    falls that far below the best, so that loops are rejected even where a worse reply was."""
    rows = []
    for sample, replies in zip(contexts, scored, strict=True):
        ranked = sorted(replies, key=lambda s: s.reward, reverse=True)
        best, worst = ranked[0], ranked[-1]
        rejected = [worst] + [s for s in ranked[1:-1] if loop_pairs and repetition(s.reply) > 0]
        for other in rejected:
            if best.reply and best.reply != other.reply and best.reward - other.reward >= min_gap:
                sample.reply = best.reply
                rows.append(dpo_row(sample, registry.get(sample.persona_id), other.reply))
    return rows


def loop_rows(contexts: list[DialogueSample], scored: list[list[ScoredReply]], registry) -> list[dict]:
    """The unlikelihood pass's rows: each reply that repeats a 3-gram, with its context's
    best reply as the anchor where the best one does not repeat itself."""
    rows = []
    for sample, replies in zip(contexts, scored, strict=True):
        best = max(replies, key=lambda s: s.reward)
        anchor = best.reply if repetition(best.reply) == 0 else None
        prompt = sample.messages(registry.get(sample.persona_id))
        rows += [
            {"prompt": prompt, "reply": s.reply, "anchor": anchor} for s in replies if repetition(s.reply) > 0
        ]
    return rows


def unlearn_loops(loops: list[dict], adapter: Path, config: OnPolicyConfig, model_dir: Path) -> dict:
    """Runs the unlikelihood pass over `loops` on `adapter`, in place, and returns its figures.
    The loops are picked by word 3-grams and the pass marks token n-grams, so a round's few
    short loops may hold none: the pass is then skipped (and says so), not the round."""
    settings = settings_for(UnlikelihoodConfig, config, steps=config.unlikelihood_steps,
                            max_passes=config.unlikelihood_passes)  # fmt: skip
    try:
        done = train_unlikelihood(loops, adapter, adapter, model_dir=model_dir, settings=settings)
    except NothingToUnlearn as e:
        return {"loops": len(loops), "steps": 0, "skipped": str(e)}
    return {k: done[k] for k in ("loops", "steps", "seconds", "repeat_p_before", "repeat_p_after")}


def with_template_share(
    pairs: list[dict], templates: list[dict], share: float, rng: random.Random
) -> list[dict]:
    """`pairs` plus template pairs making up `share` of the result (as many as there are)."""
    want = round(share * len(pairs) / (1 - share)) if share else 0
    mixed = pairs + rng.sample(templates, k=min(want, len(templates)))
    rng.shuffle(mixed)
    return mixed


def run_round(
    round_no: int,
    adapter: Path,
    out: Path,
    *,
    build: Build,
    config: OnPolicyConfig,
    model_dir: Path,
    scorer,
    registry,
) -> tuple[Path, dict]:
    """One round from `adapter`; returns the new adapter's folder and the round's figures."""
    contexts = round_contexts(build, config, round_no)
    prompts = [c.messages(registry.get(c.persona_id)) for c in contexts]
    started = time.perf_counter()
    replies = sample_replies(config, model_dir, adapter, prompts, seed=config.seed + 1000 * round_no)
    sampling_s = time.perf_counter() - started
    started = time.perf_counter()
    scored = [scorer.score(c, registry.get(c.persona_id), r) for c, r in zip(contexts, replies, strict=True)]
    scoring_s = time.perf_counter() - started
    pairs = best_worst_pairs(contexts, scored, registry, config.min_gap, config.loop_pairs)
    if not pairs:
        raise ConfigError(
            f"round {round_no}: no context's replies differed by min_gap {config.min_gap}; "
            "sample more replies per context, raise the temperature or lower min_gap."
        )
    rows = with_template_share(pairs, build.template_pairs, config.template_share,
                               random.Random(config.seed + round_no))  # fmt: skip
    target = out / f"round{round_no}"
    target.mkdir(parents=True, exist_ok=True)
    write_jsonl(target / "samples.jsonl", [
        {"context": c.id, "strategy": c.strategy, "persona": c.persona_id, "trigger": c.trigger,
         "replies": [asdict(s) for s in ss]} for c, ss in zip(contexts, scored, strict=True)
    ])  # fmt: skip
    write_jsonl(target / "pairs.jsonl", rows)
    trained = train_dpo(
        rows, adapter, target, model_dir=model_dir, settings=settings_for(DPOTrainingConfig, config)
    )
    loops = loop_rows(contexts, scored, registry)
    unlearned = (
        unlearn_loops(loops, target, config, model_dir) if config.unlikelihood_steps and loops else None
    )
    rewards = [s.reward for ss in scored for s in ss]
    n_words = sum(len(s.reply.split()) for ss in scored for s in ss)
    figures = {
        "round": round_no,
        "from": str(adapter),
        "contexts": len(contexts),
        "replies": len(rewards),
        "mean_reward": round(sum(rewards) / len(rewards), 3),
        "mean_best_reward": round(sum(max(s.reward for s in ss) for ss in scored) / len(scored), 3),
        "flagged_pct": round(100 * sum(bool(s.flags) for ss in scored for s in ss) / len(rewards), 1),
        "on_policy_pairs": len(pairs),
        "template_pairs": len(rows) - len(pairs),
        "sampling_s": round(sampling_s, 1),
        "sampled_words_per_s": round(n_words / sampling_s, 1),
        "scoring_s": round(scoring_s, 1),
        "training_s": trained["seconds"],
        "first_loss": trained["first_loss"],
        "last_loss": trained["last_loss"],
        "looping_replies": len(loops),
        "unlikelihood": unlearned,
    }
    write_json(target / "round_summary.json", figures)
    return target, figures


def train_on_policy(
    data: Path,
    adapter: Path,
    out: Path,
    *,
    config: OnPolicyConfig,
    model_dir: Path,
    reference_dir: Path,
    personas: list[str] | None = None,
) -> dict:
    """Runs every round, each from the last one's adapter; returns the summary. With
    `personas`, the contexts are only theirs (tuning one persona's own adapter)."""
    from companion.backbone import BackboneConfig, HFBackbone
    from companion.reflection import Reflector
    from memory.embedding import MiniLMEmbedder
    from persona_adapters import PersonaRegistry
    from training.evaluation.persona_judge import PersonaJudge
    from training.evaluation.support_judge import SupportJudge

    registry, embedder = PersonaRegistry.default(), MiniLMEmbedder()
    build = Build.read(data, registry, personas)
    reference = HFBackbone.from_config(BackboneConfig(model=str(reference_dir)))
    scorer = ReplyScorer(Reflector(embedder), PersonaJudge(embedder, build.personas, load_bank()),
                         SupportJudge(embedder), reference, config.weights())  # fmt: skip
    rounds = []
    try:
        for round_no in range(1, config.rounds + 1):
            adapter, figures = run_round(round_no, adapter, out, build=build, config=config, model_dir=model_dir,
                                         scorer=scorer, registry=registry)  # fmt: skip
            print(f"round {round_no}: {figures}", flush=True)
            rounds.append(figures)
    finally:
        reference.close()
    summary = {"rounds": rounds, "settings": asdict(config), "personas": [p.id for p in build.personas]}
    write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    from companion.backbone.provision import prepare_default_model

    parser = job_parser(__doc__, config=CONFIG, smoke="2 rounds of 4 contexts x 2 replies, 1 step each")
    parser.add_argument("--data", type=Path, required=True, help="a build_dialogues output folder")
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--adapter", type=Path, help="the adapter round 1 starts from (SFT)")
    start.add_argument(
        "--from-base",
        action="store_true",
        help="start from the base model itself: a fresh LoRA whose output is zero (saved in --out/round0)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--persona",
        action="append",
        help="only this persona's contexts (repeatable): to tune a persona's own adapter",
    )
    parser.add_argument(
        "--model-dir", type=Path, help="base checkpoint; default: the provisioned default MoE"
    )
    parser.add_argument("--reference-dir", type=Path, help="fluency reference; default: the dense base")
    args = parser.parse_args(argv)
    config = load_config(OnPolicyConfig, args, contexts=4, samples=2, max_new_tokens=12, min_gap=0.0, steps=1,
                         batch_size=1, max_length=384)  # fmt: skip
    if args.smoke and config.unlikelihood_steps:
        config = replace(config, unlikelihood_steps=1)  # on stays on, for one step
    paths = prepare_default_model() if not (args.model_dir and args.reference_dir) else None
    model_dir = args.model_dir or paths.moe_dir
    summary = train_on_policy(
        args.data,
        fresh_adapter(model_dir, args.out / "round0") if args.from_base else args.adapter,
        args.out,
        config=config,
        model_dir=model_dir,
        reference_dir=args.reference_dir or paths.dense_dir,
        personas=args.persona,
    )
    print_summary({"rounds": [{k: r[k] for k in ("round", "mean_reward", "on_policy_pairs", "last_loss")}
                              for r in summary["rounds"]]})  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(run(main))
