"""A softmax layer over sentence embeddings: the small trained classifiers' inference side.

The fast summarizer (event types) and the reflection module (emotions) both use one;
`training/classifiers/linear.py` trains and saves them as .npz files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memory.errors import SummarizerWeightsError
from memory.protocols import Embedder


class EmbeddingClassifier:
    """Labels texts with a linear softmax over their embeddings.

    Args:
        embedder: the embedder the weights were trained on.
        weights_path: .npz with `weight` (n_labels, dim), `bias` (n_labels,), `labels` (n_labels,).
        retrain_hint: the command that rebuilds the weights, for error messages.

    Raises:
        SummarizerWeightsError: the file is missing or its dimension does not fit the embedder.
    """

    def __init__(self, embedder: Embedder, weights_path: Path, *, retrain_hint: str):
        if not weights_path.is_file():
            raise SummarizerWeightsError(
                f"classifier weights not found at {weights_path}; train them with `{retrain_hint}`."
            )
        data = np.load(weights_path, allow_pickle=False)
        self.weight = data["weight"].astype(np.float32)  # (n_labels, dim)
        self.bias = data["bias"].astype(np.float32)  # (n_labels,)
        self.labels = [str(label) for label in data["labels"]]
        if self.weight.shape[1] != embedder.dimension:
            raise SummarizerWeightsError(
                f"{weights_path.name} expects {self.weight.shape[1]}-d embeddings but the embedder gives "
                f"{embedder.dimension}-d; retrain them with this embedder (`{retrain_hint}`)."
            )
        self.embedder = embedder

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_labels) probabilities; rows sum to 1."""
        x = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)  # (n, dim)
        logits = x @ self.weight.T + self.bias  # (n, n_labels)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def classify(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """The most probable label of each text, with its probability."""
        if not texts:
            return []
        probs = self.probabilities(texts)
        return [(self.labels[j], float(probs[i, j])) for i, j in enumerate(probs.argmax(axis=1))]
