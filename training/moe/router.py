"""Router training for the upcycled MoE: load-balancing loss + an experts-per-token target, top-p routing.

    python -m training.moe.router --out runs/router               # training/configs/router.yaml
    python -m training.moe.router --out /tmp/router --smoke       # 2 steps

Upcycles the dense default checkpoint (companion.backbone.upcycle: every expert a copy of
the dense MLP, fresh routers), installs dynamic top-p routing, freezes everything but the
router weights, and trains them on persona and memory-grounded dialogue text with

    loss = LM loss + load_balance_weight * load-balancing loss
         + experts_weight * sum over layers of (soft experts per token - target_experts)^2
         + entropy_weight * router entropy

Switch Transformer's balance loss (1.0 per layer when balanced) keeps every expert in use.
The entropy term of "Harder Tasks Need More Experts" (Huang et al. 2024) sharpens top-p
routing, but alone it drives every token to one expert (the 2026-11-23 run: 1.004 experts
per token, balance 30 -> 89 of 120), so by default it is off and a target holds the count
instead: `routing.soft_experts_per_token` is top-p's count made differentiable. Prints
experts per token by layer and the balance loss before and after, and saves the routers
(router_weights.safetensors) with a JSON report.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
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
    load_balance_weight: float = 0.1
    target_experts: float = 1.5
    experts_weight: float = 1.0
    entropy_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_counts(self, "steps", "batch_size")
        check(0 < self.top_p <= 1, f"top_p is {self.top_p}; expected a value in (0, 1].")
        check(
            min(self.load_balance_weight, self.entropy_weight, self.experts_weight) >= 0,
            "load_balance_weight, experts_weight and entropy_weight must be >= 0.",
        )
        check(1 <= self.target_experts, f"target_experts is {self.target_experts}; expected >= 1.")


def router_parameters(model) -> dict[str, object]:
    """name -> parameter of every router weight (the only thing this script trains)."""
    from companion.backbone.routing import routers_of

    routers = {id(r.weight) for r in routers_of(model)}
    return {name: p for name, p in model.named_parameters() if id(p) in routers}


@contextmanager
def router_outputs(routers):
    """While open, collects (layer, router logits, chosen expert index) from every router's
    forward pass into the yielded list (the caller clears it between passes)."""
    captured: list = []

    def hook_for(layer: int):
        def hook(module, inputs, output):
            logits, _, index = output
            captured.append((layer, logits, index))

        return hook

    handles = [r.register_forward_hook(hook_for(i)) for i, r in enumerate(routers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def held_out_routing(model, batches) -> tuple[list[float], list[float]]:
    """(mean experts per token, load-balance loss) by layer over `batches`, no gradient.

    Balance is 1.0 for a layer whose experts get equal load and equal mean probability,
    and n_experts when one expert takes everything."""
    import torch

    from companion.backbone.routing import RoutingStats, load_balance_loss, routers_of

    stats, routers = RoutingStats(), routers_of(model)
    sums, counts = [0.0] * len(routers), [0] * len(routers)
    for router in routers:
        router.stats = stats
    try:
        with router_outputs(routers) as captured, torch.no_grad():
            for batch in batches:
                real = batch["attention_mask"].reshape(-1).bool()
                captured.clear()
                model(**batch)
                for layer, logits, index in captured:
                    probs = torch.softmax(logits.float(), dim=-1)[real]
                    sums[layer] += float(load_balance_loss(probs, index[real], routers[layer].num_experts))
                    counts[layer] += 1
    finally:
        for router in routers:
            router.stats = None
    balance = [round(s / max(c, 1), 3) for s, c in zip(sums, counts, strict=True)]
    return [round(v, 3) for v in stats.mean_experts_per_token()], balance


def routing_losses(captured: list, real, n_experts: int, top_p: float, target: float):
    """(load-balance, squared distance of experts per token from `target`, entropy), each
    summed over layers, from the routers' captured outputs (`router_outputs`) over the real
    (not padding) tokens."""
    import torch

    from companion.backbone.routing import load_balance_loss, routing_entropy, soft_experts_per_token

    balance, off_target, entropy = torch.zeros(()), torch.zeros(()), torch.zeros(())
    for _, logits, index in captured:
        probs = torch.softmax(logits.float(), dim=-1)[real]  # (n_real_tokens, n_experts)
        balance = balance + load_balance_loss(probs, index[real], n_experts)
        off_target = off_target + (soft_experts_per_token(probs, top_p) - target) ** 2
        entropy = entropy + routing_entropy(probs)
    return balance, off_target, entropy


def _train_step(optimizer, lm, balance, off_target, entropy, config, step: int) -> dict:
    """One optimizer step on the LM loss plus the weighted routing losses; returns its log row."""
    loss = (
        lm
        + config.load_balance_weight * balance
        + config.experts_weight * off_target
        + config.entropy_weight * entropy
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"step": step + 1, "lm": round(lm.item(), 4), "balance": round(balance.item(), 4),
            "off_target": round(off_target.item(), 4), "entropy": round(entropy.item(), 4)}  # fmt: skip


def token_batches(tokenizer, texts: list[str], batch_size: int, max_length: int) -> tuple[list, list]:
    """(training batches, held-out batches): the texts tokenized in order, the last one or two
    batches held out."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batches = [
        tokenizer(
            texts[i : i + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        )
        for i in range(0, len(texts), batch_size)
    ]
    held_out = batches[-2:] if len(batches) > 3 else batches[-1:]
    return batches[: len(batches) - len(held_out)] or batches, held_out


def train_router(
    model,
    tokenizer,
    texts: list[str],
    config: RouterTrainingConfig,
    *,
    log=print,
    also_train: dict | None = None,
    also_learning_rate: float | None = None,
) -> dict:
    """Trains `model`'s routers in place (top-p routing installed first); returns the report.

    Args:
        also_train: more parameters (name -> parameter) trained beside the routers, such as
            the experts (training.moe.experts), at `also_learning_rate`.
    """
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
    for p in [*trainable.values(), *(also_train or {}).values()]:
        p.requires_grad_(True)
    train, held_out = token_batches(tokenizer, texts, config.batch_size, config.max_length)
    before, balance_before = held_out_routing(model, held_out)
    groups = [{"params": list(trainable.values()), "lr": config.learning_rate}]
    if also_train:
        groups.append({"params": list(also_train.values()), "lr": also_learning_rate or config.learning_rate})
    optimizer = torch.optim.AdamW(groups)
    model.train()
    history = []
    started = time.perf_counter()
    with router_outputs(routers) as captured:
        for step in range(config.steps):
            batch = train[step % len(train)]
            captured.clear()
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            out = model(**batch, labels=labels)
            real = batch["attention_mask"].reshape(-1).bool()
            losses = routing_losses(captured, real, n_experts, config.top_p, config.target_experts)
            history.append(_train_step(optimizer, out.loss, *losses, config, step))
            if step == 0 or (step + 1) % max(1, config.steps // 5) == 0:
                log(
                    f"step {step + 1}/{config.steps}: "
                    + ", ".join(f"{k} {v}" for k, v in history[-1].items() if k != "step")
                )
    model.eval()
    after, balance_after = held_out_routing(model, held_out)
    return {
        "config": asdict(config),
        "n_experts": n_experts,
        "seconds": round(time.perf_counter() - started, 1),
        "experts_per_token_before": before,
        "experts_per_token_after": after,
        "mean_before": round(sum(before) / len(before), 3),
        "mean_after": round(sum(after) / len(after), 3),
        "balance_before": balance_before,
        "balance_after": balance_after,
        "total_balance_before": round(sum(balance_before), 2),
        "total_balance_after": round(sum(balance_after), 2),
        "history": history,
    }


def routing_table(report: dict, top_p: float) -> str:
    """Markdown: experts per token and balance loss by layer, before and after training."""
    lines = [f"held-out text, top-p {top_p:.2f}; balance 1.0 = even load, {report['n_experts']} = one expert",
             "| layer | experts/token before | after | balance before | after |", "|---|---|---|---|---|"]  # fmt: skip
    columns = ("experts_per_token_before", "experts_per_token_after", "balance_before", "balance_after")
    for i, row in enumerate(zip(*(report[c] for c in columns), strict=True)):
        lines.append(f"| {i} | " + " | ".join(map(str, row)) + " |")
    lines.append(f"| mean / sum | {report['mean_before']} | {report['mean_after']} | "
                 f"{report['total_balance_before']} | {report['total_balance_after']} |")  # fmt: skip
    return "\n".join(lines)


def training_texts(
    tokenizer, n: int, *, facts: list[dict] | None = None, persona_lines: bool = True
) -> list[str]:
    """Persona example dialogues (unless `persona_lines` is False) and `n` builder dialogues
    about `facts` (default: the whole bank), rendered with the chat template."""
    from persona_adapters import PersonaRegistry
    from training.data.dialogues import TemplateDrafter, load_bank, sample_dialogues, sft_row
    from training.sft.persona import persona_conversations

    registry, bank = PersonaRegistry.default(), load_bank()
    personas = [registry.get(p) for p in ("mira", "orla", "marlowe")]
    rows = [r for p in personas for r in persona_conversations(p)] if persona_lines else []
    drafter = TemplateDrafter(bank, seed=1)
    for sample in sample_dialogues(personas, bank, n=n, seed=1, facts=facts):
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
    print(routing_table(report, config.top_p))


if __name__ == "__main__":
    raise SystemExit(run(main))
