"""Builds the memory-grounded dialogue data: sample, draft, check, write (training/data/dialogues.py).

    python -m training.data.build_dialogues --out data/dialogues                     # offline drafter
    python -m training.data.build_dialogues --out data/dialogues --smoke             # 24 samples
    python -m training.data.build_dialogues --out data/dialogues \\
        --drafter openai --endpoint http://127.0.0.1:8080/v1 --model qwen2.5-7b-instruct
    python -m training.data.build_dialogues --out data/dialogues --drafter backbone       # the local default model
    python -m training.data.build_dialogues --out data/dialogues --drafter continuation   # template opening + base model
    python -m training.data.build_dialogues --out data/dialogues --drafter continuation \
        --continue-with persona                # ... + each persona's bundled adapter, in its voice

Writes sft.jsonl (prompt-completion), dpo.jsonl (prompt/chosen/rejected), eval.jsonl (the
held-out samples the evaluation replays), dev.jsonl (samples on training facts, drawn apart from
the training set: `evaluate --dev` reads them to choose a setting without reading the held-out
set) and report.json (kept, dropped and why).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from companion.reflection import Reflector
from companion.yaml_config import YamlConfig
from memory.embedding import MiniLMEmbedder
from persona_adapters import PersonaRegistry
from training.common import CONFIGS, check, job_parser, load_persona_adapters, run, write_json
from training.data.dialogues import (
    FAILURE_KINDS,
    BackboneDrafter,
    OpenAICompatibleDrafter,
    TemplateDrafter,
    check_reply,
    dpo_row,
    failure_reply,
    load_bank,
    sample_dialogues,
    sft_row,
    write_jsonl,
)

log = logging.getLogger(__name__)

CONFIG = CONFIGS / "build_dialogues.yaml"
DRAFTERS = ("template", "openai", "backbone", "continuation")


@dataclass(frozen=True)
class BuildConfig(YamlConfig):
    n_train: int = 480
    n_eval: int = 48
    n_dev: int = 48  # dev.jsonl: training facts, its own draw (choosing settings, not reporting)
    seed: int = 7
    heldout_facts: tuple[str, ...] = ("knee", "rain", "dog", "trip")
    drafter: str = "template"
    endpoint: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    rejected_per_sample: int = 2
    own_replies: tuple[str, ...] = ("answer", "support")  # continuation drafter: the base model's own reply
    # continuation drafter: whose words follow the opening (and make the own replies): "base", or
    # "persona", each persona's registered (bundled) adapter, so the rows stay in its voice
    continue_with: str = "base"
    personas: tuple[str, ...] = field(default=("mira", "orla", "marlowe"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "heldout_facts", tuple(self.heldout_facts))
        object.__setattr__(self, "personas", tuple(self.personas))
        object.__setattr__(self, "own_replies", tuple(self.own_replies))
        check(
            self.drafter in DRAFTERS,
            f"drafter is {self.drafter!r}; expected one of {', '.join(DRAFTERS)}.",
        )
        check(
            self.continue_with in ("base", "persona"),
            f"continue_with is {self.continue_with!r}; expected 'base' or 'persona'.",
        )
        check(
            self.continue_with == "base" or self.drafter == "continuation",
            f"continue_with 'persona' is for the continuation drafter; the drafter is {self.drafter!r}.",
        )
        check(
            self.drafter != "openai" or bool(self.endpoint and self.model),
            "drafter 'openai' needs endpoint (e.g. http://127.0.0.1:8080/v1) and model.",
        )
        check(
            self.n_train >= 1
            and min(self.n_eval, self.n_dev) >= 0
            and 1 <= self.rejected_per_sample <= len(FAILURE_KINDS),
            f"n_train >= 1, n_eval >= 0, n_dev >= 0 and 1 <= rejected_per_sample <= {len(FAILURE_KINDS)} are required.",
        )


def build(config: BuildConfig, out: Path, *, registry: PersonaRegistry | None = None, reflector=None) -> dict:
    """Runs the four steps and writes the files; returns the report."""
    bank = load_bank()
    registry = registry or PersonaRegistry.default()
    personas = [registry.get(p) for p in config.personas]
    reflector = reflector or Reflector(MiniLMEmbedder())
    heldout = [f for f in bank["facts"] if f["id"] in config.heldout_facts]
    training_facts = [f for f in bank["facts"] if f["id"] not in config.heldout_facts]
    template = TemplateDrafter(bank, seed=config.seed)
    drafter = template
    if config.drafter == "openai":
        drafter = OpenAICompatibleDrafter(config.endpoint, config.model, os.environ.get(config.api_key_env))
    elif config.drafter in ("backbone", "continuation"):  # `model`: "default" or a checkpoint directory
        from companion.backbone import BackboneConfig, HFBackbone
        from training.data.continuation import ContinuationDrafter

        backbone = HFBackbone.from_config(BackboneConfig(model=config.model or "default"))
        voices = (
            load_persona_adapters(backbone, registry, config.personas, "voice", purpose="draft with")
            if config.continue_with == "persona"
            else {}
        )
        drafter = (
            BackboneDrafter(backbone)
            if config.drafter == "backbone"
            else ContinuationDrafter(
                backbone, bank, own=config.own_replies, reflector=reflector, voice_adapters=voices
            )
        )
    rng = random.Random(config.seed)
    report: dict = {"config": asdict(config), "drafted": 0, "kept": 0, "dropped": Counter(), "fallback_drafts": 0,
                    "rejected_kinds": Counter(), "rejected_not_caught": Counter()}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    sft, dpo = [], []
    for sample in sample_dialogues(personas, bank, n=config.n_train, seed=config.seed, facts=training_facts):
        persona = registry.get(sample.persona_id)
        try:
            sample.reply = drafter.draft(sample, persona)
        except (OSError, ValueError) as e:  # the endpoint failed: the offline drafter stands in
            log.warning("drafter failed on %s (%s); using the template drafter", sample.id, e)
            report["fallback_drafts"] += 1
            sample.reply = template.draft(sample, persona)
        report["drafted"] += 1
        problems = check_reply(sample.reply, sample, reflector, persona)
        if problems:
            report["dropped"].update(problems)
            continue
        report["kept"] += 1
        sft.append(sft_row(sample, persona))
        kinds = [k for k in FAILURE_KINDS if failure_reply(k, sample, persona, bank, rng) is not None]
        for kind in rng.sample(kinds, k=min(len(kinds), config.rejected_per_sample)):
            rejected = failure_reply(kind, sample, persona, bank, rng)
            if check_reply(rejected, sample, reflector, persona):  # one the checks miss is no use
                dpo.append(dpo_row(sample, persona, rejected))
                report["rejected_kinds"][kind] += 1
            else:
                report["rejected_not_caught"][kind] += 1
    evaluation = sample_dialogues(personas, bank, n=config.n_eval, seed=config.seed + 1000, facts=heldout)
    dev = sample_dialogues(personas, bank, n=config.n_dev, seed=config.seed + 2000, facts=training_facts)
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "dpo.jsonl", dpo)
    write_jsonl(out / "eval.jsonl", [s.to_json() for s in evaluation])
    write_jsonl(out / "dev.jsonl", [s.to_json() for s in dev])
    report.update(n_sft=len(sft), n_dpo=len(dpo), n_eval=len(evaluation), n_dev=len(dev))
    write_json(out / "report.json", report)  # Counters are dicts: JSON as they are
    return report


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__, config=CONFIG, smoke="24 training samples, 12 held-out")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--drafter", choices=DRAFTERS)
    parser.add_argument("--endpoint")
    parser.add_argument("--model")
    parser.add_argument(
        "--continue-with", choices=("base", "persona"), help="continuation drafter: who continues the opening"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = BuildConfig.from_file(args.config)
    overrides = {
        k: v
        for k, v in {
            "drafter": args.drafter,
            "endpoint": args.endpoint,
            "model": args.model,
            "continue_with": args.continue_with,
        }.items()
        if v
    }
    if args.smoke:
        overrides.update(n_train=24, n_eval=12)
    report = build(replace(config, **overrides), args.out)
    print(json.dumps({k: report[k] for k in ("drafted", "kept", "n_sft", "n_dpo", "n_eval", "dropped", "rejected_kinds",
                                             "rejected_not_caught", "fallback_drafts")}, default=dict))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(run(main))
