"""Router training for the upcycled MoE: load-balancing loss + entropy term, top-p routing.

    python -m training.moe.router --out runs/router               # training/configs/router.yaml
    python -m training.moe.router --out /tmp/router --smoke       # 2 steps

Upcycles the dense default checkpoint (companion.backbone.upcycle: every expert a copy of
the dense MLP, fresh routers), installs dynamic top-p routing, freezes everything but the
router weights, and trains them on persona and memory-grounded dialogue text with

    loss = LM loss + load_balance_weight * load-balancing loss + entropy_weight * router entropy

(Switch Transformer's balance loss; the entropy term of "Harder Tasks Need More Experts",
Huang et al. 2024, which sharpens top-p routing so easy tokens use fewer experts). Prints
experts per token by layer before and after, and saves the routers
(router_weights.safetensors) with a JSON report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from companion.yaml_config import YamlConfig
from training.common import CONFIGS, check, check_counts, job_parser, load_config, run, write_json

CONFIG = CONFIGS / "router.yaml"


@dataclass(frozen=True)
class RouterTrainingConfig(YamlConfig):
    steps: int = 40
    batch_size: int = 4
    learning_rate: float = 1e-2
    max_length: int = 256
    top_p: float = 0.4
    load_balance_weight: float = 0.01
    entropy_weight: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_counts(self, "steps", "batch_size")
        check(0 < self.top_p <= 1, f"top_p is {self.top_p}; expected a value in (0, 1].")
        check(
            self.load_balance_weight >= 0 and self.entropy_weight >= 0,
            "load_balance_weight and entropy_weight must be >= 0.",
        )


def router_parameters(model) -> dict[str, object]:
    """name -> parameter of every router weight (the only thing this script trains)."""
    from companion.backbone.routing import routers_of

    routers = {id(r.weight) for r in routers_of(model)}
    return {name: p for name, p in model.named_parameters() if id(p) in routers}


def experts_per_token(model, batches) -> list[float]:
    """Mean experts per token by layer over `batches` (no gradient)."""
    import torch

    from companion.backbone.routing import RoutingStats, routers_of

    stats = RoutingStats()
    for router in routers_of(model):
        router.stats = stats
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for router in routers_of(model):
        router.stats = None
    return [round(v, 3) for v in stats.mean_experts_per_token()]


def routing_losses(captured: list, n_experts: int):
    """(load-balance, entropy) summed over layers from the routers' captured outputs."""
    import torch

    from companion.backbone.routing import load_balance_loss, routing_entropy

    balance, entropy = torch.zeros(()), torch.zeros(())
    for logits, index, mask in captured:
        probs = torch.softmax(logits.float(), dim=-1)[mask]  # (n_real_tokens, n_experts)
        balance = balance + load_balance_loss(probs, index[mask], n_experts)
        entropy = entropy + routing_entropy(probs)
    return balance, entropy


def train_router(model, tokenizer, texts: list[str], config: RouterTrainingConfig, *, log=print) -> dict:
    """Trains `model`'s routers in place (top-p routing installed first); returns the report."""
    import torch

    from companion.backbone.config import RoutingConfig
    from companion.backbone.routing import install_routing, routers_of

    torch.manual_seed(config.seed)
    install_routing(model, RoutingConfig(policy="top_p", top_p=config.top_p))
    routers = routers_of(model)
    n_experts = routers[0].num_experts
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = router_parameters(model)
    for p in trainable.values():
        p.requires_grad_(True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batches = [
        tokenizer(
            texts[i : i + config.batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=config.max_length,
        )  # fmt: skip
        for i in range(0, len(texts), config.batch_size)
    ]
    held_out = batches[-2:] if len(batches) > 3 else batches[-1:]
    train = batches[: len(batches) - len(held_out)] or batches
    before = experts_per_token(model, held_out)
    captured: list = []
    mask_holder: dict = {}

    def hook(module, inputs, output):
        logits, _, index = output
        captured.append((logits, index, mask_holder["mask"]))

    handles = [r.register_forward_hook(hook) for r in routers]
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=config.learning_rate)
    model.train()
    history = []
    started = time.perf_counter()
    for step in range(config.steps):
        batch = train[step % len(train)]
        mask_holder["mask"] = batch["attention_mask"].reshape(-1).bool()
        captured.clear()
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        out = model(**batch, labels=labels)
        balance, entropy = routing_losses(captured, n_experts)
        loss = out.loss + config.load_balance_weight * balance + config.entropy_weight * entropy
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({"step": step + 1, "lm": round(out.loss.item(), 4), "balance": round(balance.item(), 4),
                        "entropy": round(entropy.item(), 4)})  # fmt: skip
        if step == 0 or (step + 1) % max(1, config.steps // 5) == 0:
            log(
                f"step {step + 1}/{config.steps}: "
                + ", ".join(f"{k} {v}" for k, v in history[-1].items() if k != "step")
            )
    for handle in handles:
        handle.remove()
    model.eval()
    after = experts_per_token(model, held_out)
    return {
        "config": asdict(config),
        "seconds": round(time.perf_counter() - started, 1),
        "experts_per_token_before": before,
        "experts_per_token_after": after,
        "mean_before": round(sum(before) / len(before), 3),
        "mean_after": round(sum(after) / len(after), 3),
        "history": history,
    }


def training_texts(tokenizer, n: int) -> list[str]:
    """Persona example dialogues and builder dialogues, rendered with the chat template."""
    from persona_adapters import PersonaRegistry
    from training.data.dialogues import TemplateDrafter, load_bank, sample_dialogues, sft_row
    from training.sft.persona import persona_conversations

    registry, bank = PersonaRegistry.default(), load_bank()
    personas = [registry.get(p) for p in ("mira", "orla", "marlowe")]
    rows = [r for p in personas for r in persona_conversations(p)]
    drafter = TemplateDrafter(bank, seed=1)
    for sample in sample_dialogues(personas, bank, n=n, seed=1):
        persona = registry.get(sample.persona_id)
        sample.reply = drafter.draft(sample, persona)
        rows.append(sft_row(sample, persona))
    return [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]


def main(argv: list[str] | None = None) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from companion.backbone.provision import prepare_default_model
    from companion.backbone.upcycle import upcycle_llama_to_mixtral

    parser = job_parser(__doc__, config=CONFIG, smoke="2 steps on a few texts")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = load_config(RouterTrainingConfig, args, steps=2, batch_size=2, max_length=96)
    paths = prepare_default_model()
    tokenizer = AutoTokenizer.from_pretrained(paths.dense_dir, local_files_only=True)
    dense = AutoModelForCausalLM.from_pretrained(paths.dense_dir, local_files_only=True, dtype=torch.float32)
    model = upcycle_llama_to_mixtral(dense, n_experts=4)
    texts = training_texts(tokenizer, n=6 if args.smoke else 96)
    report = train_router(model, tokenizer, texts[: 6 if args.smoke else None], config)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in router_parameters(model).items()},
              str(args.out / "router_weights.safetensors"))  # fmt: skip
    write_json(args.out / "report.json", report)
    print(f"experts per token by layer (top-p {config.top_p:.2f}), held-out text:")
    print("| layer | before | after |\n|---|---|---|")
    for i, (b, a) in enumerate(
        zip(report["experts_per_token_before"], report["experts_per_token_after"], strict=True)
    ):
        print(f"| {i} | {b} | {a} |")
    print(f"| mean | {report['mean_before']} | {report['mean_after']} |")


if __name__ == "__main__":
    raise SystemExit(run(main))
