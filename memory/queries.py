"""What the store asks of one player-NPC collection: ranked recall, and the events near a text.

Pure reads of a Chroma collection handle; `memory/store.py` finds the handle (isolation,
stale handles, locks) and calls these.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

import numpy as np

from memory.config import RetrievalWeights
from memory.consolidation import event_of
from memory.events import MemoryEvent, ScoredEvent
from memory.keyword_index import KeywordIndex
from memory.retrieval import fact_key, score


def ranked(
    collection,
    queries: np.ndarray,
    *,
    k: int,
    candidates: int,
    include_superseded: bool,
    now: datetime,
    weights: RetrievalWeights,
    keyword: dict[str, float] | None = None,
) -> list[ScoredEvent]:
    """The k best events for any of the query vectors (the query and what it implies), by score.

    Candidates are the nearest neighbours of each query vector plus the events in `keyword`
    (event id -> normalised BM25 score). Each event's relevance is its best cosine similarity
    over the queries; superseded events are dropped here, not by a Chroma filter (see
    memory/store.py).
    """
    keyword = keyword or {}
    result = collection.query(
        query_embeddings=queries, n_results=candidates, include=["metadatas", "distances"]
    )
    best: dict[str, tuple[float, dict]] = {}
    for ids, distances, metadatas in zip(
        result["ids"], result["distances"], result["metadatas"], strict=True
    ):
        for event_id, distance, metadata in zip(ids, distances, metadatas, strict=True):
            relevance = 1.0 - distance  # cosine space: distance = 1 - cosine similarity
            if event_id not in best or relevance > best[event_id][0]:
                best[event_id] = (relevance, metadata)
    missing = [event_id for event_id in keyword if event_id not in best]
    if missing:  # found by keyword only: their cosine similarity from the stored vectors
        got = collection.get(ids=missing, include=["metadatas", "embeddings"])
        similarity = np.asarray(got["embeddings"], dtype=np.float32) @ queries.T  # (n_missing, n_queries)
        for event_id, metadata, row in zip(got["ids"], got["metadatas"], similarity, strict=True):
            best[event_id] = (float(row.max()), metadata)
    scored = [
        score(event_of(meta), rel, now, weights, keyword.get(event_id, 0.0))
        for event_id, (rel, meta) in best.items()
        if include_superseded or meta["active"]
    ]
    scored.sort(key=lambda s: s.score, reverse=True)
    return scored[:k]


class KeywordIndexes:
    """A BM25 index per collection, built from its events on first use and rebuilt when the
    collection's size changes (a write or a delete, by this process or another).

    Held in memory, at most `max_collections` at a time (least recently used dropped first);
    `forget(collection_ids)` drops the indexes of hard-deleted collections at once.
    """

    def __init__(self, max_collections: int = 256):
        self.max_collections = max_collections
        self._indexes: OrderedDict[str, tuple[int, list[str], KeywordIndex]] = OrderedDict()
        self._lock = threading.Lock()

    def top(self, collection, query: str, k: int) -> dict[str, float]:
        """Event id -> BM25 score / the best score, for the k best events sharing a word with `query`."""
        ids, index = self._index(collection)
        hits = index.top(query, k)
        return {ids[i]: s / hits[0][1] for i, s in hits} if hits else {}

    def forget(self, collection_ids) -> None:
        with self._lock:
            for collection_id in collection_ids:
                self._indexes.pop(str(collection_id), None)

    def _index(self, collection) -> tuple[list[str], KeywordIndex]:
        key, count = str(collection.id), collection.count()
        with self._lock:
            cached = self._indexes.get(key)
            if cached is not None and cached[0] == count:
                self._indexes.move_to_end(key)
                return cached[1], cached[2]
        got = collection.get(include=["metadatas"])
        index = KeywordIndex([fact_key(event_of(m).content) for m in got["metadatas"]])
        with self._lock:
            self._indexes[key] = (count, got["ids"], index)
            self._indexes.move_to_end(key)
            while len(self._indexes) > self.max_collections:
                self._indexes.popitem(last=False)
        return got["ids"], index


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
