"""DPO (TRL's DPOTrainer) over multi-turn conversations, starting from an SFT adapter.

    python -m training.dpo.train --data data/dialogues --sft-adapter adapters/dialogue-sft --out adapters/dialogue-dpo
    python -m training.dpo.train --data data/dialogues --sft-adapter /tmp/sft --out /tmp/dpo --smoke   # 2 steps

Each row's prompt is the whole conversation so far (system prompt with reflection's
guidance, the earlier session, the player's line); "chosen" is the checked reply and
"rejected" a realistic failure (ignoring the memory, breaking character, a generic answer,
an invented fact, explaining an out-of-world thing). The SFT adapter is loaded trainable;
TRL keeps a frozen copy of it as the reference policy, so DPO moves away from SFT, not
from the bare backbone. Only the adapter's weights change.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from companion.backbone.provision import prepare_default_model
from companion.errors import ConfigError
from companion.yaml_config import YamlConfig
from training.common import (
    CONFIGS,
    check,
    check_counts,
    job_parser,
    load_config,
    print_summary,
    run,
    write_json,
)
from training.data.dialogues import read_jsonl
from training.sft.lora import load_model

CONFIG = CONFIGS / "dpo.yaml"


@dataclass(frozen=True)
class DPOTrainingConfig(YamlConfig):
    steps: int = 60
    batch_size: int = 2
    learning_rate: float = 5e-5
    beta: float = 0.1
    sft_weight: float = 0.0
    max_length: int = 640
    seed: int = 0

    def __post_init__(self) -> None:
        check_counts(self, "steps", "batch_size")
        check(self.beta > 0, f"beta is {self.beta}; expected > 0 (0.1 is usual).")
        check(self.sft_weight >= 0, f"sft_weight is {self.sft_weight}; expected >= 0 (0 is plain DPO).")

    def losses(self) -> dict:
        """TRL's loss settings: the DPO loss, plus with `sft_weight` the chosen replies'
        mean per-token NLL at that weight (RPO), which keeps DPO from pushing the chosen
        replies' likelihood down along with the rejected ones'."""
        if not self.sft_weight:
            return {"loss_type": ["sigmoid"]}
        return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, self.sft_weight]}


def load_pairs(data: Path) -> list[dict]:
    return read_jsonl(data / "dpo.jsonl")


def train_dpo(
    rows: list[dict],
    sft_adapter: Path,
    out: Path,
    *,
    model_dir: str | Path,
    settings: DPOTrainingConfig,
    model=None,
) -> dict:
    """Trains the SFT adapter further with DPO and saves it to `out`; returns a summary.

    Args:
        model: an already loaded base model (tests pass a tiny one); else from `model_dir`.
    """
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer  # TRL's trainer arguments, not ours

    if not rows:
        raise ConfigError("no preference pairs; run python -m training.data.build_dialogues first.")
    torch.manual_seed(settings.seed)
    if model is None:
        model, tokenizer = load_model(model_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    policy = PeftModel.from_pretrained(model, str(sft_adapter), is_trainable=True)
    with tempfile.TemporaryDirectory() as scratch:
        args = DPOConfig(
            output_dir=scratch,
            max_steps=settings.steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="constant",
            beta=settings.beta,
            **settings.losses(),
            max_length=settings.max_length,
            logging_steps=max(1, settings.steps // 10),
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            seed=settings.seed,
            disable_tqdm=not os.isatty(2),
        )
        trainer = DPOTrainer(
            model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        logs = [e for e in trainer.state.log_history if "loss" in e]
        out.mkdir(parents=True, exist_ok=True)
        trainer.model.save_pretrained(str(out), selected_adapters=["default"])
    summary = {
        "steps": settings.steps,
        "pairs": len(rows),
        "seconds": round(seconds, 1),
        "first_loss": logs[0]["loss"] if logs else None,
        "last_loss": logs[-1]["loss"] if logs else None,
        "last_reward_accuracy": logs[-1].get("rewards/accuracies") if logs else None,
        "last_reward_margin": logs[-1].get("rewards/margins") if logs else None,
        "settings": asdict(settings),
        "sft_adapter": str(sft_adapter),
    }
    write_json(out / "training_summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__, config=CONFIG, smoke="2 steps")
    parser.add_argument("--data", type=Path, required=True, help="a build_dialogues output folder")
    parser.add_argument("--sft-adapter", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", help="base checkpoint; default: the provisioned default MoE")
    args = parser.parse_args(argv)
    settings = load_config(DPOTrainingConfig, args, steps=2, batch_size=1, max_length=384)
    model_dir = args.model_dir or prepare_default_model().moe_dir
    summary = train_dpo(
        load_pairs(args.data), args.sft_adapter, args.out, model_dir=model_dir, settings=settings
    )
    print_summary({k: v for k, v in summary.items() if k != "settings"})


if __name__ == "__main__":
    raise SystemExit(run(main))
