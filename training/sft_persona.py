"""Trains a persona's LoRA adapter with TRL's SFTTrainer on its example dialogues.

    python -m training.sft_persona mira --out persona_adapters/adapters/mira           # 24 steps, ~4 min
    python -m training.sft_persona mira --out /tmp/mira-lora --smoke                   # 4 steps, ~1 min

The adapter targets attention projections (q, v, o), which peft can mix per row in a
batch (see companion/backbone/adapters.py). Each NPC line of the persona's example
dialogues is one completion to learn, after the system prompt and the lines before it.
The dialogue builder of the training issue will add generated conversations.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from companion.backbone.provision import prepare_default_model
from companion.prompting import persona_system_prompt
from persona_adapters import Persona, PersonaRegistry

log = logging.getLogger(__name__)
TARGET_MODULES = ["q_proj", "v_proj", "o_proj"]


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


def train_persona_adapter(
    persona: Persona, out: Path, *, steps: int = 24, learning_rate: float = 3e-4, rank: int = 8, seed: int = 0
) -> dict:
    """Trains and saves the adapter (peft format) to `out`; returns a summary with the loss curve."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = persona_conversations(persona)
    if not rows:
        raise ValueError(
            f"persona {persona.id!r} has no example dialogues ending on the NPC; add some to train on."
        )
    torch.manual_seed(seed)
    model_dir = prepare_default_model().moe_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as scratch:
        config = SFTConfig(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=4,
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            logging_steps=max(1, steps // 10),
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            max_length=384,
            seed=seed,
            disable_tqdm=not os.isatty(2),
        )
        lora = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.0,
            target_modules=TARGET_MODULES,
            task_type="CAUSAL_LM",
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora,
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        out.mkdir(parents=True, exist_ok=True)
        trainer.model.save_pretrained(out)
    # peft writes into <out>/ directly for the default adapter name
    summary = {"persona": persona.id, "steps": steps, "seconds": round(seconds, 1), "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, "examples": len(rows)}  # fmt: skip
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("persona")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--smoke", action="store_true", help="4 steps")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    persona = PersonaRegistry.default(args.data_dir).get(args.persona)
    summary = train_persona_adapter(persona, args.out, steps=4 if args.smoke else args.steps)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
