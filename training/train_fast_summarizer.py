"""Trains the fast summarizer's classifier and writes memory/weights/fast_summarizer.npz.

    python -m training.train_fast_summarizer                 # full: 400 examples per class
    python -m training.train_fast_summarizer --smoke         # 60 per class, a few seconds
    python -m training.train_fast_summarizer --out /tmp/w.npz

The data comes from `training.summarizer_data` (templates written for this project);
nothing is downloaded. A softmax layer over frozen all-MiniLM-L6-v2 embeddings, trained
full-batch with L2 regularisation; it prints training accuracy and, when the dev set
is there, per-class precision/recall and macro-F1 on it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from memory.embedding import MiniLMEmbedder
from memory.events import EVENT_TYPES
from memory.fast_summarizer import NONE, WEIGHTS_PATH
from training.summarizer_data import build_dataset

LABELS = [*EVENT_TYPES, NONE]
DEV_SET = Path(__file__).resolve().parents[1] / "tests" / "data" / "memory_dev_set.jsonl"


def train_softmax(x: np.ndarray, y: np.ndarray, n_labels: int, *, l2: float, epochs: int, seed: int):
    """Full-batch softmax regression; returns (weight (n_labels, dim), bias (n_labels,))."""
    torch.manual_seed(seed)
    features, targets = torch.from_numpy(x), torch.from_numpy(y)
    layer = torch.nn.Linear(x.shape[1], n_labels)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=0.5, max_iter=epochs, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(features), targets) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer.weight.detach().numpy(), layer.bias.detach().numpy()


def per_class_report(gold: list[str], predicted: list[str], labels: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per label, plus "macro_f1"."""
    report: dict[str, dict[str, float]] = {}
    for label in labels:
        tp = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        n_pred = sum(p == label for p in predicted)
        n_gold = sum(g == label for g in gold)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[label] = {"precision": precision, "recall": recall, "f1": f1, "support": n_gold}
    report["macro_f1"] = {"f1": float(np.mean([report[label]["f1"] for label in labels]))}
    return report


def load_dev_set(path: Path = DEV_SET) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["text"], r["label"]) for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="60 examples per class; finishes in seconds")
    parser.add_argument("--per-class", type=int, default=400)
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    per_class = 60 if args.smoke else args.per_class

    started = time.perf_counter()
    rows = build_dataset(per_class, seed=args.seed)
    embedder = MiniLMEmbedder(cache_size=0)
    x = np.asarray(embedder.embed([t for t, _ in rows]), dtype=np.float32)
    y = np.asarray([LABELS.index(label) for _, label in rows], dtype=np.int64)
    weight, bias = train_softmax(x, y, len(LABELS), l2=args.l2, epochs=args.epochs, seed=args.seed)
    train_acc = float(((x @ weight.T + bias).argmax(1) == y).mean())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out, weight=weight.astype(np.float32), bias=bias.astype(np.float32), labels=np.array(LABELS)
    )
    print(
        f"trained on {len(rows)} sentences in {time.perf_counter() - started:.1f} s; train accuracy {train_acc:.3f}"
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} kB)")
    if DEV_SET.is_file():
        from memory.fast_summarizer import FastSummarizer

        summarizer = FastSummarizer(embedder, weights_path=args.out)
        dev = load_dev_set()
        predicted = [label for label, _ in summarizer.classify([t for t, _ in dev])]
        report = per_class_report([g for _, g in dev], predicted, LABELS)
        for label in LABELS:
            r = report[label]
            print(f"  {label:15s} precision {r['precision']:.2f}  recall {r['recall']:.2f}  f1 {r['f1']:.2f}")
        print(f"dev macro-F1 {report['macro_f1']['f1']:.3f}")


if __name__ == "__main__":
    main()
