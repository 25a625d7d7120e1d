"""Scoring recalled events: relevance, recency and importance (pure functions)."""

from __future__ import annotations

import math
import re
from datetime import datetime

from memory.config import ForgettingPolicy, RetrievalWeights
from memory.events import MemoryEvent, ScoredEvent, ScoreParts

_SUBJECT = re.compile(r"^\s*the player(?:'s|’s)?\s+", re.IGNORECASE)


def fact_key(content: str) -> str:
    """The part of a fact that carries its meaning, for embedding.

    Every event reads "The player ...", and that shared subject dominates sentence
    embeddings (two unrelated facts score ~0.5); it is stripped before embedding.
    """
    stripped = _SUBJECT.sub("", content, count=1)
    return stripped or content


def hours_between(earlier: datetime, later: datetime) -> float:
    return max((later - earlier).total_seconds() / 3600.0, 0.0)


def recency(event: MemoryEvent, now: datetime, decay_per_hour: float) -> float:
    """decay_per_hour ** hours since the fact was last told; 1.0 for a fresh fact."""
    return decay_per_hour ** hours_between(event.updated_at, now)


def score(
    event: MemoryEvent,
    relevance: float,
    now: datetime,
    weights: RetrievalWeights,
    keyword: float = 0.0,
    said: float | None = None,
) -> ScoredEvent:
    """The weighted retrieval score of `event` and its parts.

    Args:
        event: the candidate.
        relevance: cosine similarity to the query (or what it implies), clipped to [0, 1].
        keyword: the event's BM25 score for the query over the best one, in [0, 1].
        said: cosine similarity of the query to the player's words the event came from;
            None (an event stored before those were kept) counts as `relevance`.
        now: the time of the query.
        weights: part weights.
    """
    parts = ScoreParts(
        relevance=min(max(relevance, 0.0), 1.0),
        recency=recency(event, now, weights.recency_decay_per_hour),
        importance=event.importance / 10.0,
        keyword=min(max(keyword, 0.0), 1.0),
        said=min(max(relevance if said is None else said, 0.0), 1.0),
    )
    total = (
        weights.relevance * parts.relevance
        + weights.recency * parts.recency
        + weights.importance * parts.importance
        + weights.keyword * parts.keyword
        + weights.said * parts.said
    )
    return ScoredEvent(event=event, score=total, parts=parts)


def retention(event: MemoryEvent, now: datetime, policy: ForgettingPolicy) -> float:
    """How strongly an event is still held: importance, halved every half-life, lifted by repetition."""
    age_days = hours_between(event.updated_at, now) / 24.0
    return (
        event.importance
        / 10.0
        * 0.5 ** (age_days / policy.half_life_days)
        * (1.0 + math.log2(event.mention_count))
    )


def should_forget(event: MemoryEvent, now: datetime, policy: ForgettingPolicy) -> bool:
    return (
        event.importance < policy.protect_importance and retention(event, now, policy) < policy.min_retention
    )
