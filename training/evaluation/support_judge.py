"""Does this reply express support? A small classifier over written replies.

Trained, each time the evaluation runs (seconds), on the even positions of
`support_replies.yaml` (supportive replies: comfort, sympathy, reassurance, help offered for
the player's trouble; unsupportive ones: answers, small talk, dismissals, sad facts told
flatly), embedded with MiniLM, a softmax layer on top (training/classifiers/linear.py). Its
accuracy on the odd positions, never trained on, is printed beside the evaluation's
"support %" column, so the column can be read against how far the judge is right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from training.classifiers.linear import train_softmax
from training.common import EVAL_DATA
from training.evaluation.quality import rate

DATA = EVAL_DATA / "support_replies.yaml"
LABELS = ("unsupportive", "supportive")


def labelled(path: Path = DATA, *, heldout: bool) -> list[tuple[str, int]]:
    """(reply, 1 if supportive) for the held-out (odd) or training (even) positions."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [
        (line, LABELS.index(label))
        for label in LABELS
        for i, line in enumerate(data[label])
        if (i % 2 == 1) == heldout
    ]


class SupportJudge:
    """P(the reply expresses support), from a reply's MiniLM embedding.

    Args:
        embedder: sentence embeddings (MiniLM).
        path: the labelled replies.
    """

    def __init__(self, embedder, path: Path = DATA):
        self.embedder, self.path = embedder, path
        rows = labelled(path, heldout=False)
        x = np.asarray(embedder.embed([t for t, _ in rows]), dtype=np.float32)
        y = np.asarray([label for _, label in rows], dtype=np.int64)
        self.weight, self.bias = train_softmax(x, y, len(LABELS), l2=1e-3, epochs=200, seed=0)
        self.n_training_lines = len(rows)

    def supportive(self, replies: list[str]) -> list[bool]:
        if not replies:
            return []
        x = np.asarray(self.embedder.embed(replies), dtype=np.float32)
        return [bool(i == 1) for i in (x @ self.weight.T + self.bias).argmax(axis=1)]

    def heldout_accuracy(self) -> dict:
        """The judge's own accuracy on the held-out replies, with a Wilson 95% interval."""
        rows = labelled(self.path, heldout=True)
        right = sum(
            got == bool(want)
            for got, (_, want) in zip(self.supportive([t for t, _ in rows]), rows, strict=True)
        )
        return rate(right, len(rows))
