"""How the player feels: a trained classifier over sentence embeddings, not a keyword list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memory.classifier import EmbeddingClassifier
from memory.protocols import Embedder

EMOTIONS = ("neutral", "sadness", "distress", "anger", "joy")
WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "weights" / "emotion.npz"
NEGATIVE = frozenset({"sadness", "distress", "anger"})


@dataclass(frozen=True)
class EmotionReading:
    """The most probable emotion, its probability, and the whole distribution."""

    label: str
    confidence: float
    scores: dict[str, float]

    @property
    def needs_support(self) -> bool:
        return self.label in NEGATIVE


class EmotionClassifier:
    """Reads emotion from the player's line (and optionally the previous one).

    Args:
        embedder: the embedder the weights were trained with (all-MiniLM-L6-v2).
        min_confidence: below this, the reading falls back to "neutral".
    """

    def __init__(self, embedder: Embedder, *, weights_path: Path | None = None, min_confidence: float = 0.5):
        self.classifier = EmbeddingClassifier(
            embedder, weights_path or WEIGHTS_PATH, retrain_hint="python -m training.classifiers.emotion"
        )
        self.min_confidence = min_confidence

    def read(self, text: str) -> EmotionReading:
        probs = self.classifier.probabilities([text])[0]
        scores = {label: float(p) for label, p in zip(self.classifier.labels, probs, strict=True)}
        label = max(scores, key=scores.get)
        if scores[label] < self.min_confidence:
            label = "neutral"
        return EmotionReading(label=label, confidence=scores[label], scores=scores)
