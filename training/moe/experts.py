"""Experts that earn their place: train the upcycled MoE's experts and routers on dialogue
text, and a dense control on the same tokens; compare held-out perplexity.

    python -m training.moe.experts --out runs/experts            # training/configs/experts.yaml
    python -m training.moe.experts --out /tmp/experts --smoke    # 2 steps each

Upcycling copies the dense MLP into every expert, so the MoE starts as the dense model
(the same logits) at the cost of more compute. Two runs from the same dense checkpoint:

- dense control: the dense model's MLP weights are trained, nothing else;
- MoE: upcycled, top-p routing held near `target_experts` per token with a balanced load
  (training.moe.router's losses), experts and routers trained, nothing else.

Both see the same batches in the same order (the same token budget). Held-out text is
builder dialogues about facts no training text mentions (build_dialogues' held-out facts).
The MoE's active MLP compute per token is its mean experts per token times the dense MLP's.
Prints one table and writes report.json; --save-moe keeps the trained MoE checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from companion.yaml_config import YamlConfig
from training.common import (
    CONFIGS,
    check,
    check_counts,
    job_parser,
    load_config,
    run,
    settings_for,
    write_json,
)
from training.moe.router import (
    RouterTrainingConfig,
    held_out_routing,
    router_parameters,
    token_batches,
    train_router,
    training_texts,
)

CONFIG = CONFIGS / "experts.yaml"


@dataclass(frozen=True)
class ExpertTrainingConfig(YamlConfig):
    steps: int = 30
    batch_size: int = 4
    max_length: int = 192
    learning_rate: float = 5e-5
    n_experts: int = 4
    top_p: float = 0.4
    target_experts: float = 1.5
    experts_weight: float = 1.0
    load_balance_weight: float = 0.1
    router_learning_rate: float = 0.01
    n_dialogues: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        check_counts(self, "steps", "batch_size", "n_experts", "n_dialogues")
        check(self.learning_rate > 0, f"learning_rate is {self.learning_rate}; expected > 0.")

    def router_config(self) -> RouterTrainingConfig:
        return settings_for(
            RouterTrainingConfig, self, learning_rate=self.router_learning_rate, entropy_weight=0.0
        )


def perplexity(model, batches) -> float:
    """exp(mean next-token NLL) over every real token of `batches`."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(**batch, labels=labels).loss) * n
            count += n
    return round(math.exp(total / count), 3)


def train_dense_mlp(model, batches, config: ExpertTrainingConfig) -> dict:
    """Trains the dense model's MLP weights on `batches` (in order, cycled); returns timing and losses."""
    import torch

    torch.manual_seed(config.seed)
    params = [p for name, p in model.named_parameters() if ".mlp." in name]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    model.train()
    losses, started = [], time.perf_counter()
    for step in range(config.steps):
        batch = batches[step % len(batches)]
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 4))
    model.eval()
    return {"seconds": round(time.perf_counter() - started, 1), "first_lm": losses[0], "last_lm": losses[-1],
            "trained_params": sum(p.numel() for p in params)}  # fmt: skip


def expert_parameters(model) -> dict:
    """name -> parameter of every routed expert's weights."""
    return {name: p for name, p in model.named_parameters() if ".experts." in name}


def compare(
    dense_dir: Path, config: ExpertTrainingConfig, *, save_moe: Path | None = None, log=print
) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from companion.backbone.upcycle import upcycle_llama_to_mixtral
    from training.data.build_dialogues import BuildConfig
    from training.data.dialogues import load_bank

    heldout_ids = set(BuildConfig().heldout_facts)
    facts = load_bank()["facts"]
    tokenizer = AutoTokenizer.from_pretrained(dense_dir, local_files_only=True)
    texts = training_texts(
        tokenizer, config.n_dialogues, facts=[f for f in facts if f["id"] not in heldout_ids]
    )
    heldout_texts = training_texts(tokenizer, max(8, config.n_dialogues // 4), persona_lines=False,
                                   facts=[f for f in facts if f["id"] in heldout_ids])  # fmt: skip
    train, _ = token_batches(tokenizer, texts, config.batch_size, config.max_length)
    heldout = sum(token_batches(tokenizer, heldout_texts, config.batch_size, config.max_length), [])

    def load_dense():
        return AutoModelForCausalLM.from_pretrained(dense_dir, local_files_only=True, dtype=torch.float32)

    dense = load_dense()
    start_ppl = perplexity(dense, heldout)
    log(f"held-out perplexity at the start (dense = upcycled MoE): {start_ppl}")
    dense_run = train_dense_mlp(dense, train, config)
    dense_ppl = perplexity(dense, heldout)
    log(f"dense control: {dense_run}, held-out perplexity {dense_ppl}")
    del dense
    moe = upcycle_llama_to_mixtral(load_dense(), n_experts=config.n_experts, seed=config.seed)
    moe_run = train_router(moe, tokenizer, texts, config.router_config(), log=log,
                           also_train=expert_parameters(moe), also_learning_rate=config.learning_rate)  # fmt: skip
    moe.eval()
    moe_ppl = perplexity(moe, heldout)
    per_token, balance = held_out_routing(moe, heldout)
    experts = [p.detach() for p in expert_parameters(moe).values()]
    spread = max(float((e - e.mean(dim=0, keepdim=True)).abs().max()) for e in experts)
    if save_moe is not None:
        moe.save_pretrained(save_moe)
        tokenizer.save_pretrained(save_moe)
    return {
        "config": asdict(config),
        "train_texts": len(texts),
        "heldout_texts": len(heldout_texts),
        "tokens_per_step": config.batch_size * config.max_length,
        "start_perplexity": start_ppl,
        "dense": {**dense_run, "perplexity": dense_ppl, "active_mlp": 1.0},
        "moe": {
            "seconds": moe_run["seconds"],
            "first_lm": moe_run["history"][0]["lm"],
            "last_lm": moe_run["history"][-1]["lm"],
            "trained_params": sum(e.numel() for e in experts)
            + sum(r.numel() for r in router_parameters(moe).values()),
            "perplexity": moe_ppl,
            "active_mlp": round(sum(per_token) / len(per_token), 3),
            "experts_per_token": per_token,
            "balance": balance,
            "total_balance": round(sum(balance), 2),
            "largest_expert_difference": round(spread, 6),
        },
    }


def report_table(report: dict) -> str:
    d, m = report["dense"], report["moe"]
    lines = [
        f"start (dense = upcycled MoE): held-out perplexity {report['start_perplexity']}; "
        f"{report['config']['steps']} steps x {report['tokens_per_step']} tokens each",
        "| model | held-out perplexity | LM loss first -> last | active MLP per token (x dense) | trained params | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in (("dense control", d), ("MoE (experts + routers)", m)):
        lines.append(f"| {name} | {r['perplexity']} | {r['first_lm']} -> {r['last_lm']} | {r['active_mlp']} | "
                     f"{r['trained_params'] / 1e6:.1f}M | {r['seconds']} |")  # fmt: skip
    lines += ["", f"MoE routing on held-out text (balance 1.0 = even load, {report['config']['n_experts']} = one expert;"
              f" sum {m['total_balance']}); experts now differ by up to {m['largest_expert_difference']}",
              "| layer | experts/token | balance |", "|---|---|---|"]  # fmt: skip
    lines += [
        f"| {i} | {e} | {b} |"
        for i, (e, b) in enumerate(zip(m["experts_per_token"], m["balance"], strict=True))
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from companion.backbone.provision import prepare_default_model

    parser = job_parser(__doc__, config=CONFIG, smoke="2 steps each on a few short texts")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--save-moe", action="store_true", help="also save the trained MoE under --out/moe")
    args = parser.parse_args(argv)
    config = load_config(ExpertTrainingConfig, args, steps=2, batch_size=2, max_length=64, n_dialogues=4)
    args.out.mkdir(parents=True, exist_ok=True)
    report = compare(
        prepare_default_model().dense_dir, config, save_moe=args.out / "moe" if args.save_moe else None
    )
    write_json(args.out / "report.json", report)
    print(report_table(report))


if __name__ == "__main__":
    raise SystemExit(run(main))
