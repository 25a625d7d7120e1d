"""Training and scoring the small softmax classifiers over frozen sentence embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def train_softmax(x: np.ndarray, y: np.ndarray, n_labels: int, *, l2: float, epochs: int, seed: int):
    """Full-batch softmax regression with L2; returns (weight (n_labels, dim), bias (n_labels,))."""
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


def fit_and_save(
    rows: list[tuple[str, str]], labels: list[str], embedder, out: Path, *, l2: float, epochs: int, seed: int
) -> float:
    """Embeds `rows` (text, label), trains, writes `out` (.npz); returns training accuracy."""
    x = np.asarray(embedder.embed([t for t, _ in rows]), dtype=np.float32)
    y = np.asarray([labels.index(label) for _, label in rows], dtype=np.int64)
    weight, bias = train_softmax(x, y, len(labels), l2=l2, epochs=epochs, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, weight=weight.astype(np.float32), bias=bias.astype(np.float32), labels=np.array(labels))
    return float(((x @ weight.T + bias).argmax(1) == y).mean())


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


def classifier_parser(doc: str | None, *, per_class: int, smoke_per_class: int, out: Path):
    """The command line both classifier jobs take: examples per class, L2, epochs, seed, --out."""
    from training.common import job_parser

    parser = job_parser(doc, smoke=f"{smoke_per_class} examples per class; finishes in seconds")
    parser.add_argument("--per-class", type=int, default=per_class, help=f"default: {per_class}")
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=out, help="the .npz file (default: the bundled weights)")
    parser.set_defaults(smoke_per_class=smoke_per_class)
    return parser


def examples_per_class(args) -> int:
    return args.smoke_per_class if args.smoke else args.per_class
