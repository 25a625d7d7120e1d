"""Trains reflection's learned gates; writes companion/weights/recall_scorer.npz and strategy.npz.

    python -m training.classifiers.reflection            # both models, about a minute
    python -m training.classifiers.reflection --smoke    # a few epochs, seconds

Both are small perceptrons over frozen all-MiniLM-L6-v2 embeddings, trained on the "train"
split of `training/data/reflection_bank.yaml` only (held-out fact kinds, phrasings and request
categories never reach them; `python -m training.evaluation.reflection_heldout` measures both
splits). The strategy model also learns support from the emotion examples.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from companion.reflection.recall_scorer import WEIGHTS_PATH as RECALL_WEIGHTS
from companion.reflection.recall_scorer import pair_features
from companion.reflection.small_mlp import save_mlp
from companion.reflection.strategy import GATES, persona_setting, strategy_features
from companion.reflection.strategy import WEIGHTS_PATH as STRATEGY_WEIGHTS
from memory.embedding import MiniLMEmbedder
from memory.events import Turn
from memory.fast_summarizer import FastSummarizer
from persona_adapters import get_persona
from training.common import job_parser, run
from training.data import reflection_examples as bank
from training.data.emotion_examples import build_dataset as emotion_rows

SUPPORT_EMOTIONS = frozenset({"sadness", "distress", "anger"})


def stored_form(summarizer: FastSummarizer, fact: str) -> tuple[str, str] | None:
    """(content, type) of the event the fast summarizer stores for a player's line, as at run time."""
    drafts = summarizer.summarize_sync([Turn(role="player", text=fact)], npc_name="Mira")
    return (drafts[0].content, str(drafts[0].type)) if drafts else None


def recall_pairs(summarizer: FastSummarizer, split: bank.Split, *, negatives: int, seed: int):
    """(memory, memory type, line, label) rows: a fact with its own kind's lines (and its own
    words) is 1; with lines of another fact group or plain in-world questions, 0."""
    rng = random.Random(seed)
    kinds = bank.fact_kinds(split)
    stored = {k.id: stored_form(summarizer, k.fact) for k in kinds}
    plain = [q for s in bank.settings() for q in bank.in_world(s.id, split)]
    distress: dict[str, list[str]] = {}
    for kind, line in bank.distress_triggers(split):
        distress.setdefault(kind.id, []).append(line)
    others_of = {
        group: [line for k in kinds if k.group != group for line in k.triggers]
        for group in {k.group for k in kinds}
    }
    rows = []
    for kind in kinds:
        if stored[kind.id] is None:
            continue
        content, kind_type = stored[kind.id]
        for line in (*kind.triggers, *distress.get(kind.id, ()), kind.fact):
            rows.append((content, kind_type, line, 1.0))
        others = others_of[kind.group]
        for line in rng.sample(others, min(len(others), negatives)) + rng.sample(
            plain, min(len(plain), negatives // 2)
        ):
            rows.append((content, kind_type, line, 0.0))
    return rows


def recall_matrix(embedder, rows) -> tuple[np.ndarray, np.ndarray]:
    vectors = dict(zip(*_embedded(embedder, {t for r in rows for t in (r[0], r[2])}), strict=True))
    x = np.concatenate(
        [pair_features(vectors[line], vectors[memory][None, :], [kind]) for memory, kind, line, _ in rows]
    )
    return x, np.asarray([[r[3]] for r in rows], dtype=np.float32)


def _embedded(embedder, texts):
    texts = sorted(texts)
    return texts, list(np.asarray(embedder.embed(texts), dtype=np.float32))


def settings_texts() -> dict[str, str]:
    return {s.id: persona_setting(get_persona(s.persona)) if s.persona else s.text for s in bank.settings()}


def strategy_rows(
    split: bank.Split, *, seed: int, emotion_per_class: int
) -> list[tuple[str, str, list[float]]]:
    """(line, setting id, [support, out_of_world, injection, memory_question]) rows."""
    rng = random.Random(seed)
    settings = bank.settings()

    def anywhere(line: str, labels: list[float], n: int = 2):
        return [(line, s.id, labels) for s in rng.sample(settings, n)]

    rows = []
    for line in [line for _, line in bank.support_lines(split)] + [
        line for _, line in bank.distress_triggers(split)
    ]:
        rows += anywhere(line, [1, 0, 0, 0], 3)
    if split in ("train", "fit"):
        for line, emotion in emotion_rows(emotion_per_class, seed=seed):
            rows += anywhere(line, [float(emotion in SUPPORT_EMOTIONS), 0, 0, 0], 1)
    for request in bank.requests(split):
        rows += [(request.text, s.id, [0, float(request.out_of_world(s)), 0, 0]) for s in settings]
    for s in settings:
        rows += [(q, s.id, [0, 0, 0, 0]) for q in bank.in_world(s.id, split)]
    for line in bank.injections(split):
        rows += anywhere(line, [0, 0, 1, 0], 4)
    for line in bank.memory_questions(split):
        rows += anywhere(line, [0, 0, 0, 1], 4)
    for kind in bank.fact_kinds(split):
        for line in (kind.fact, *kind.triggers):
            rows += anywhere(line, [0, 0, 0, 0], 1)
    return rows


def strategy_matrix(embedder, rows) -> tuple[np.ndarray, np.ndarray]:
    texts = settings_texts()
    vectors = dict(zip(*_embedded(embedder, {r[0] for r in rows} | set(texts.values())), strict=True))
    x = np.concatenate([strategy_features(vectors[line][None, :], vectors[texts[s]]) for line, s, _ in rows])
    return x, np.asarray([labels for _, _, labels in rows], dtype=np.float32)


def train_mlp(
    x: np.ndarray, y: np.ndarray, *, hidden: int, epochs: int, seed: int, weight_decay: float = 1e-3
):
    """Full-batch Adam on binary cross-entropy with dropout; returns the layers as arrays."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Dropout(0.1),
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(hidden, y.shape[1]),
    )
    features, targets = torch.from_numpy(x), torch.from_numpy(y)
    positives = targets.mean(dim=0).clamp(0.02, 0.98)
    pos_weight = ((1 - positives) / positives).sqrt()  # lifts rare labels without drowning the rest
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=weight_decay)
    net.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(features), targets, pos_weight=pos_weight
        )
        loss.backward()
        optimizer.step()
    first, second = net[1], net[4]
    return {
        "w1": first.weight.detach().numpy(),
        "b1": first.bias.detach().numpy(),
        "w2": second.weight.detach().numpy(),
        "b2": second.bias.detach().numpy(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few epochs (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split", default="train", choices=["train", "fit"], help="fit: to compare choices on dev"
    )
    parser.add_argument("--recall-hidden", type=int, default=64)
    parser.add_argument("--strategy-hidden", type=int, default=128)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--negatives", type=int, default=12, help="negative lines per fact")
    parser.add_argument("--recall-out", type=Path, default=RECALL_WEIGHTS)
    parser.add_argument("--strategy-out", type=Path, default=STRATEGY_WEIGHTS)
    args = parser.parse_args(argv)
    epochs = 20 if args.smoke else args.epochs
    started = time.perf_counter()
    embedder = MiniLMEmbedder(cache_size=20000)
    pairs = recall_pairs(FastSummarizer(embedder), args.split, negatives=args.negatives, seed=args.seed)
    x, y = recall_matrix(embedder, pairs)
    save_mlp(
        args.recall_out,
        train_mlp(
            x, y, hidden=args.recall_hidden, epochs=epochs, seed=args.seed, weight_decay=args.weight_decay
        ),
        ["recall"],
    )
    print(f"recall scorer: {len(pairs)} pairs ({int(y.sum())} positive) -> {args.recall_out}")
    rows = strategy_rows(args.split, seed=args.seed, emotion_per_class=40 if args.smoke else 200)
    x, y = strategy_matrix(embedder, rows)
    save_mlp(
        args.strategy_out,
        train_mlp(
            x, y, hidden=args.strategy_hidden, epochs=epochs, seed=args.seed, weight_decay=args.weight_decay
        ),
        list(GATES),
    )
    counts = ", ".join(f"{g} {int(n)}" for g, n in zip(GATES, y.sum(axis=0), strict=True))
    print(f"strategy model: {len(rows)} rows ({counts} positive) -> {args.strategy_out}")
    print(f"trained in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    raise SystemExit(run(main))
