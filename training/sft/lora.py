"""LoRA supervised fine-tuning with TRL's SFTTrainer: the one training loop every adapter uses.

Rows are TRL's conversational prompt-completion format
(`{"prompt": [messages...], "completion": [{"role": "assistant", ...}]}`): the loss
counts only the completion's tokens. The base weights are frozen; only the adapter
trains and is saved (peft format).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from companion.backbone.adapters import holds_adapter
from companion.errors import ConfigError
from companion.yaml_config import YamlConfig
from training.common import check, check_counts

SUMMARY_KEYS = ("steps", "examples", "seconds", "first_loss", "last_loss")
"""What an SFT job prints of its summary."""
ATTENTION_MODULES = ("q_proj", "v_proj", "o_proj")  # mixable per row in a batch (companion.backbone.adapters)


@dataclass(frozen=True)
class LoraSFTConfig(YamlConfig):
    """Hyperparameters of one SFT run (YAML: a saved LoraSFTConfig)."""

    steps: int = 60
    batch_size: int = 4
    learning_rate: float = 3e-4
    rank: int = 8
    max_length: int = 512
    seed: int = 0
    target_modules: tuple[str, ...] = ATTENTION_MODULES

    def __post_init__(self) -> None:
        check_counts(self, "steps", "batch_size", "rank")
        check(
            0 < self.learning_rate < 1,
            f"learning_rate is {self.learning_rate}; expected a value in (0, 1), e.g. 3e-4.",
        )
        object.__setattr__(self, "target_modules", tuple(self.target_modules))


def load_model(model_dir: str | Path):
    """(model, tokenizer) from a local checkpoint, fp32 on the CPU, nothing from the hub."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    return model, tokenizer


def lora_settings(rank: int, target_modules=ATTENTION_MODULES):
    """The peft LoraConfig every adapter here uses (alpha = 2 x rank, no dropout)."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=list(target_modules),
        task_type="CAUSAL_LM",
    )


def fresh_adapter(model_dir: str | Path, out: Path, *, rank: int = LoraSFTConfig.rank) -> Path:
    """Saves a new LoRA adapter to `out` whose output is zero (peft starts B at 0), so the model
    with it is exactly the base: a starting point for training that begins from the base."""
    from peft import get_peft_model

    model, _ = load_model(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    get_peft_model(model, lora_settings(rank)).save_pretrained(str(out))
    return out


def train_lora_sft(
    rows: list[dict], out: Path, *, model_dir: str | Path, config: LoraSFTConfig, model=None,
    init_adapter: str | Path | None = None,
) -> dict:  # fmt: skip
    """Trains a LoRA adapter on `rows` and saves it to `out`; returns a summary with the losses.

    Args:
        rows: conversational prompt-completion rows.
        out: the adapter directory (adapter_config.json, adapter_model.safetensors).
        model_dir: the base checkpoint.
        config: hyperparameters.
        model: an already loaded base model (tests pass a tiny one); loaded from
            `model_dir` when None.
        init_adapter: a peft adapter folder to continue training (its own rank and modules;
            `config.rank` and `config.target_modules` are then unused); None starts a fresh one.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise ConfigError(
            "no training rows; build some first (e.g. python -m training.data.build_dialogues)."
        )
    if init_adapter is not None and not holds_adapter(init_adapter):  # before the model loads
        raise ConfigError(f"{init_adapter} holds no peft adapter (adapter_config.json) to continue from.")
    torch.manual_seed(config.seed)
    if model is None:
        model, tokenizer = load_model(model_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant",
            logging_steps=max(1, config.steps // 10),
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            max_length=config.max_length,
            seed=config.seed,
            disable_tqdm=not os.isatty(2),
        )
        lora = None
        if init_adapter is None:
            lora = lora_settings(config.rank, config.target_modules)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        trainer = SFTTrainer(
            model=model,
            args=args,
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
    summary = {
        "steps": config.steps,
        "examples": len(rows),
        "seconds": round(seconds, 1),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "config": asdict(config),
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
