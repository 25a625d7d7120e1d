"""Trains a persona's LoRA adapter with TRL's SFTTrainer on its example dialogues.

    python -m training.sft.persona mira --out persona_adapters/adapters/mira           # 24 steps, ~4 min
    python -m training.sft.persona mira --out /tmp/mira-lora --smoke                   # 4 steps, ~1 min
    python -m training.sft.persona mira --out runs/p/mira --from-adapter runs/x/dpo/round2  # continue one

The adapter targets attention projections (q, v, o), which peft can mix per row in a
batch (see companion/backbone/adapters.py). Each NPC line of the persona's example
dialogues is one completion to learn, after the system prompt and the lines before it.
Memory-grounded dialogues from the data builder (training/data/dialogues.py), checked,
are added for personas with a voice in its bank. With --from-adapter the run continues that
adapter (e.g. the dialogue pipeline's shared DPO adapter) instead of starting from the base.
"""

from __future__ import annotations

import logging
from pathlib import Path

from companion.backbone.provision import prepare_default_model
from companion.errors import ConfigError
from companion.prompting import persona_system_prompt
from persona_adapters import Persona, PersonaRegistry
from training.common import job_parser, print_summary, run, write_json
from training.sft.lora import ATTENTION_MODULES, LoraSFTConfig, train_lora_sft

log = logging.getLogger(__name__)
TARGET_MODULES = ATTENTION_MODULES


def persona_conversations(persona: Persona) -> list[dict]:
    """One conversational prompt-completion row per NPC line of each example dialogue.

    The prompt is the persona's system prompt (as the chat uses it) and the dialogue so
    far; the completion is the NPC's line, the only tokens the loss counts.
    """
    rows = []
    for dialogue in persona.example_dialogues:
        messages = [{"role": "system", "content": persona_system_prompt(persona)}]
        for line in dialogue:
            message = {"role": "user" if line.role == "player" else "assistant", "content": line.text}
            if message["role"] == "assistant" and len(messages) > 1:
                rows.append({"prompt": list(messages), "completion": [message]})
            messages.append(message)
    return rows


def builder_conversations(persona: Persona, n: int = 24, seed: int = 0) -> list[dict]:
    """Memory-grounded dialogues for this persona from the data builder, checked (step 3).

    Only for personas with a voice in training/data/dialogue_bank.yaml; others train on
    their example dialogues alone.
    """
    from companion.reflection import Reflector
    from memory.embedding import MiniLMEmbedder
    from training.data.dialogues import TemplateDrafter, check_reply, load_bank, sample_dialogues, sft_row

    bank = load_bank()
    if persona.id not in bank["voices"]:
        log.info("no voice for %s in the dialogue bank; training on its example dialogues only", persona.id)
        return []
    reflector, drafter = Reflector(MiniLMEmbedder()), TemplateDrafter(bank, seed=seed)
    rows = []
    for sample in sample_dialogues([persona], bank, n=n, seed=seed):
        sample.reply = drafter.draft(sample, persona)
        if not check_reply(sample.reply, sample, reflector, persona):
            rows.append(sft_row(sample, persona))
    return rows


def train_persona_adapter(
    persona: Persona, out: Path, *, steps: int = 24, learning_rate: float = 3e-4, rank: int = 8, seed: int = 0,
    n_generated: int = 24, from_adapter: Path | None = None,
) -> dict:  # fmt: skip
    """Trains and saves the adapter (peft format) to `out`; returns a summary with the loss curve.
    With `from_adapter`, training continues that adapter (its rank) instead of a fresh one."""
    rows = persona_conversations(persona)
    if not rows:
        raise ConfigError(
            f"persona {persona.id!r} has no example dialogues ending on the NPC; add some to train on."
        )
    rows += builder_conversations(persona, n_generated, seed)
    config = LoraSFTConfig(steps=steps, learning_rate=learning_rate, rank=rank, seed=seed, max_length=640,
                           target_modules=TARGET_MODULES)  # fmt: skip
    model_dir = prepare_default_model().moe_dir
    summary = train_lora_sft(rows, out, model_dir=model_dir, config=config, init_adapter=from_adapter)
    summary["persona"] = persona.id
    write_json(out / "training_summary.json", summary)
    return {k: summary[k] for k in ("persona", "steps", "seconds", "first_loss", "last_loss", "examples")}


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__, smoke="4 steps")
    parser.add_argument("persona")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--from-adapter", type=Path, help="continue this adapter instead of starting from the base"
    )
    args = parser.parse_args(argv)
    persona = PersonaRegistry.default(args.data_dir).get(args.persona)
    steps = 4 if args.smoke else args.steps
    summary = train_persona_adapter(persona, args.out, steps=steps, from_adapter=args.from_adapter)
    print_summary(summary)


if __name__ == "__main__":
    raise SystemExit(run(main))
