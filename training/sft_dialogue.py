"""SFT of a LoRA adapter on the memory-grounded dialogues (training/build_dialogues.py output).

    python -m training.sft_dialogue --data data/dialogues --out adapters/dialogue-sft
    python -m training.sft_dialogue --data data/dialogues --out /tmp/sft --smoke        # 2 steps
    python -m training.sft_dialogue --data data/dialogues --out adapters/mira --persona mira

The adapter (attention q/v/o, like the persona adapters) learns to use recalled memories,
follow reflection's guidance and keep the persona's voice; with --persona it trains on
that persona's dialogues only, so it can serve as that persona's adapter.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from companion.backbone.provision import prepare_default_model
from training.dialogue_data import read_jsonl
from training.lora_sft import LoraSFTConfig, train_lora_sft

CONFIG = Path(__file__).parent / "configs" / "sft_dialogue.yaml"


def load_rows(data: Path, persona_name: str | None = None) -> list[dict]:
    rows = read_jsonl(data / "sft.jsonl")
    if persona_name:
        rows = [r for r in rows if r["prompt"][0]["content"].startswith(f"You are {persona_name}.")]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a build_dialogues output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--persona", help="train on this persona's dialogues only")
    parser.add_argument("--model-dir", help="base checkpoint; default: the provisioned default MoE")
    parser.add_argument("--smoke", action="store_true", help="2 short steps")
    args = parser.parse_args(argv)
    config = LoraSFTConfig.from_file(args.config)
    if args.smoke:
        config = replace(config, steps=2, batch_size=2, max_length=384)
    name = None
    if args.persona:
        from persona_adapters import PersonaRegistry

        name = PersonaRegistry.default().get(args.persona).name
    rows = load_rows(args.data, name)
    model_dir = args.model_dir or prepare_default_model().moe_dir
    summary = train_lora_sft(rows, args.out, model_dir=model_dir, config=config)
    print(json.dumps({k: summary[k] for k in ("steps", "examples", "seconds", "first_loss", "last_loss")}))


if __name__ == "__main__":
    main()
