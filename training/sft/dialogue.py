"""SFT of a LoRA adapter on the memory-grounded dialogues (training/data/build_dialogues.py output).

    python -m training.sft.dialogue --data data/dialogues --out adapters/dialogue-sft
    python -m training.sft.dialogue --data data/dialogues --out /tmp/sft --smoke        # 2 steps
    python -m training.sft.dialogue --data data/dialogues --out adapters/mira --persona mira
    python -m training.sft.dialogue --data DIR --out DIR --persona mira --from-adapter persona_adapters/adapters/mira

The adapter (attention q/v/o, like the persona adapters) learns to use recalled memories,
follow reflection's guidance and keep the persona's voice; with --persona it trains on
that persona's dialogues only, so it can serve as that persona's adapter; with --from-adapter
it continues that adapter (e.g. the persona's bundled one) instead of starting a fresh one.
"""

from __future__ import annotations

from pathlib import Path

from companion.backbone.provision import prepare_default_model
from training.common import CONFIGS, job_parser, load_config, print_summary, run
from training.data.dialogues import read_jsonl
from training.sft.lora import SUMMARY_KEYS, LoraSFTConfig, train_lora_sft

CONFIG = CONFIGS / "sft_dialogue.yaml"


def load_rows(data: Path, persona_name: str | None = None) -> list[dict]:
    rows = read_jsonl(data / "sft.jsonl")
    if persona_name:
        rows = [r for r in rows if r["prompt"][0]["content"].startswith(f"You are {persona_name}.")]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__, config=CONFIG, smoke="2 short steps")
    parser.add_argument("--data", type=Path, required=True, help="a build_dialogues output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--persona", help="train on this persona's dialogues only")
    parser.add_argument("--model-dir", help="base checkpoint; default: the provisioned default MoE")
    parser.add_argument(
        "--from-adapter", type=Path, help="continue this adapter instead of starting a fresh one"
    )
    args = parser.parse_args(argv)
    config = load_config(LoraSFTConfig, args, steps=2, batch_size=2, max_length=384)
    name = None
    if args.persona:
        from persona_adapters import PersonaRegistry

        name = PersonaRegistry.default().get(args.persona).name
    rows = load_rows(args.data, name)
    model_dir = args.model_dir or prepare_default_model().moe_dir
    summary = train_lora_sft(
        rows, args.out, model_dir=model_dir, config=config, init_adapter=args.from_adapter
    )
    print_summary(summary, SUMMARY_KEYS)


if __name__ == "__main__":
    raise SystemExit(run(main))
