"""What the store asks of one player-NPC collection: ranked recall, and the events near a text.

Pure reads of a Chroma collection handle; `memory/store.py` finds the handle (isolation,
stale handles, locks) and calls these.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from memory.config import RetrievalWeights
from memory.consolidation import event_of
from memory.events import MemoryEvent, ScoredEvent
from memory.retrieval import score


def ranked(
    collection,
    queries: np.ndarray,
    *,
    k: int,
    candidates: int,
    include_superseded: bool,
    now: datetime,
    weights: RetrievalWeights,
) -> list[ScoredEvent]:
    """The k best events for any of the query vectors (the query and what it implies), by score.

    Each event's relevance is its best cosine similarity over the queries; superseded
    events are dropped here, not by a Chroma filter (see memory/store.py).
    """
    result = collection.query(
        query_embeddings=queries, n_results=candidates, include=["metadatas", "distances"]
    )
    best: dict[str, tuple[float, dict]] = {}
    for ids, distances, metadatas in zip(
        result["ids"], result["distances"], result["metadatas"], strict=True
    ):
        for event_id, distance, metadata in zip(ids, distances, metadatas, strict=True):
            if not (include_superseded or metadata["active"]):
                continue
            relevance = 1.0 - distance  # cosine space: distance = 1 - cosine similarity
            if event_id not in best or relevance > best[event_id][0]:
                best[event_id] = (relevance, metadata)
    scored = [score(event_of(meta), rel, now, weights) for rel, meta in best.values()]
    scored.sort(key=lambda s: s.score, reverse=True)
    return scored[:k]


def nearest_events(collection, vectors, *, k: int) -> list[MemoryEvent]:
    """The `k` events nearest to each query vector, superseded ones too, and the events that
    replaced any superseded one found: what a check of a text against memory must see."""
    count = collection.count()
    if not count or not len(vectors):
        return []
    found = collection.query(query_embeddings=vectors, n_results=min(k, count), include=["metadatas"])
    events = {e.id: e for rows in found["metadatas"] for e in map(event_of, rows)}
    missing = sorted({e.superseded_by for e in events.values() if e.superseded_by} - set(events))
    if missing:
        events |= {
            e.id: e for e in map(event_of, collection.get(ids=missing, include=["metadatas"])["metadatas"])
        }
    return sorted(events.values(), key=lambda e: (e.created_at, e.id))
