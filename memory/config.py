"""Memory hyperparameters: frozen dataclasses, validated, with `from_file` for YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from memory.errors import MemoryLayerError


class MemoryConfigError(MemoryLayerError, ValueError):
    """A memory setting is out of range."""


@dataclass(frozen=True)
class RetrievalWeights:
    """score = relevance * w_relevance + recency * w_recency + importance * w_importance
    + keyword * w_keyword + said * w_said.

    Each part lies in [0, 1] (Park et al., "Generative Agents", 2023): relevance is the
    cosine similarity to the query or to what the query implies; recency decays by
    `recency_decay_per_hour` for every hour since the fact was last told; importance is
    the event's importance / 10; keyword is the event's BM25 score for the query divided by
    the best one among the player's events (0 when no word is shared; memory/keyword_index.py).
    Keyword matches are also candidates of their own, so a fact found only by a rare word
    (a name, an illness) can be recalled; said is the cosine similarity to the player's own
    words the fact came from (`MemoryEvent.said`: "It taught me self-acceptance", said of a
    book the question names, where the fact lost the book). `relevance` stays the cosine
    similarity to the fact, the one that reflection's gates read.
    """

    relevance: float = 1.0
    recency: float = 0.5
    importance: float = 0.5
    keyword: float = 0.5
    said: float = 1.0
    recency_decay_per_hour: float = 0.995

    def __post_init__(self) -> None:
        for name in ("relevance", "recency", "importance", "keyword", "said"):
            if getattr(self, name) < 0:
                raise MemoryConfigError(f"retrieval weight {name} is {getattr(self, name)}; expected >= 0.")
        if not 0 < self.recency_decay_per_hour <= 1:
            raise MemoryConfigError(
                f"recency_decay_per_hour is {self.recency_decay_per_hour}; expected a factor in (0, 1]."
            )


@dataclass(frozen=True)
class ForgettingPolicy:
    """Which events fade away.

    retention = importance/10 * 0.5 ** (age_days / half_life_days) * (1 + log2(mention_count));
    an event whose retention falls below `min_retention` is hard-deleted, unless its
    importance is at least `protect_importance`.
    """

    half_life_days: float = 30.0
    min_retention: float = 0.1
    protect_importance: int = 8

    def __post_init__(self) -> None:
        if self.half_life_days <= 0:
            raise MemoryConfigError(f"half_life_days is {self.half_life_days}; expected > 0.")
        if not 0 <= self.min_retention <= 1:
            raise MemoryConfigError(f"min_retention is {self.min_retention}; expected a value in [0, 1].")


@dataclass(frozen=True)
class MemoryConfig:
    """How the store consolidates and retrieves.

    Attributes:
        weights: retrieval score weights.
        duplicate_similarity: cosine similarity at or above which a new fact of the same
            type is the same fact told again (its mention count rises).
        candidates_per_result: how many nearest neighbours are scored per result asked.
        implication_threshold: similarity of a query to a topic above which that topic's
            implied concerns are searched too (see `memory.implications`).
        one_per_line: a search returns at most one event per line the player said (the best
            scored of the facts it gave): the events of one line share its words, so without
            this one long line could fill every result. On LoCoMo's development half
            (conversations 1-3 to choose, 4-5 not used for it) single-hop recall@10 went
            0.685 -> 0.720 and 0.693 -> 0.697, multi-hop 0.530 -> 0.540 and 0.432 -> 0.491.
    """

    weights: RetrievalWeights = field(default_factory=RetrievalWeights)
    duplicate_similarity: float = 0.85
    candidates_per_result: int = 4
    implication_threshold: float = 0.45
    one_per_line: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", RetrievalWeights(**self.weights))
        if not 0 < self.duplicate_similarity <= 1:
            raise MemoryConfigError(f"duplicate_similarity is {self.duplicate_similarity}; expected (0, 1].")
        if self.candidates_per_result < 1:
            raise MemoryConfigError(f"candidates_per_result is {self.candidates_per_result}; expected >= 1.")

    @classmethod
    def from_file(cls, path: str | Path) -> MemoryConfig:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise MemoryConfigError(f"{path} must be a mapping with keys among {sorted(known)}.")
        return cls(**data)
