"""What the store asks of one player-NPC collection: ranked recall, and the events near a text.

Pure reads of a Chroma collection handle; `memory/store.py` finds the handle (isolation,
stale handles, locks) and calls these.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from memory.config import RetrievalWeights
from memory.consolidation import event_of, said_vector_of
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
    keyword: dict[str, KeywordHit] | None = None,
    one_per_line: bool = False,
) -> list[ScoredEvent]:
    """The k best events for any of the query vectors (the query and what it implies), by score.

    Candidates are the nearest neighbours of each query vector plus the events in `keyword`
    (event id -> its normalised BM25 score, metadata and vector, from `KeywordIndexes.top`). Each event's relevance is its best cosine similarity
    over the queries; superseded events are dropped here, not by a Chroma filter (see
    memory/store.py). With `one_per_line`, only the best event of each line the player said
    is kept (`MemoryConfig.one_per_line`).
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
    for event_id, hit in keyword.items():
        if event_id not in best:  # found by keyword only: cosine similarity from its stored vector
            best[event_id] = (float((queries @ hit.vector).max()), hit.metadata)
    scored = [
        score(
            event_of(meta),
            rel,
            now,
            weights,
            keyword[event_id].score if event_id in keyword else 0.0,
            said_relevance(queries, meta),
        )
        for event_id, (rel, meta) in best.items()
        if include_superseded or meta["active"]
    ]
    scored.sort(key=lambda s: s.score, reverse=True)
    return first_per_line(scored)[:k] if one_per_line else scored[:k]


def first_per_line(scored: list[ScoredEvent]) -> list[ScoredEvent]:
    """`scored` (best first) without the events whose lines an earlier event came from."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for hit in scored:
        lines = tuple(hit.event.source_turn_ids)
        if lines and lines in seen:
            continue
        seen.add(lines)
        out.append(hit)
    return out


def said_relevance(queries: np.ndarray, metadata: dict) -> float | None:
    """The best cosine similarity of the queries to the player's words an event came from."""
    vector = said_vector_of(metadata)
    if vector is None or vector.shape[0] != queries.shape[1]:
        return None
    return float((queries @ vector).max())


@dataclass(frozen=True)
class KeywordHit:
    score: float  # BM25 score over the best one for the query, in (0, 1]
    metadata: dict
    vector: np.ndarray


class KeywordIndexes:
    """A BM25 index per collection, built from its events on first use and rebuilt when the
    collection's size changes (a write or a delete, by this process or another). An event's
    terms are its fact's and those of the player's words it came from (`MemoryEvent.said`).

    Each index keeps its events' metadata and vectors, so a keyword-only candidate costs no
    Chroma call. A fact replaced by a newer one always comes with that newer event (the size
    changes), so `active` is never stale; a repeated fact's mention count and recency can lag
    until the next write.

    Held in memory for at most `max_events` events in all (about 3 kB each with its
    vectors and words; least recently used collections dropped first); `forget(collection_ids)` drops
    the indexes of hard-deleted collections at once.
    """

    def __init__(self, max_events: int = 20_000):
        self.max_events = max_events
        self._indexes: OrderedDict[str, tuple[int, dict, KeywordIndex]] = OrderedDict()
        self._lock = threading.Lock()

    def top(self, collection, query: str, k: int) -> dict[str, KeywordHit]:
        """The k best events sharing a word with `query`, by id."""
        got, index = self._index(collection)
        hits = index.top(query, k)
        return {
            got["ids"][i]: KeywordHit(s / hits[0][1], got["metadatas"][i], got["vectors"][i]) for i, s in hits
        }

    def forget(self, collection_ids) -> None:
        with self._lock:
            for collection_id in collection_ids:
                self._indexes.pop(str(collection_id), None)

    def _index(self, collection) -> tuple[dict, KeywordIndex]:
        key, count = str(collection.id), collection.count()
        with self._lock:
            cached = self._indexes.get(key)
            if cached is not None and cached[0] == count:
                self._indexes.move_to_end(key)
                return cached[1], cached[2]
        found = collection.get(include=["metadatas", "embeddings"])
        got = {
            "ids": found["ids"],
            "metadatas": found["metadatas"],
            # a collection can exist with no events (all taken back): no rows, not a reshape error
            "vectors": np.asarray(found["embeddings"], dtype=np.float32).reshape(len(found["ids"]), -1)
            if found["ids"]
            else np.zeros((0, 0), dtype=np.float32),
        }
        events = [event_of(m) for m in got["metadatas"]]
        index = KeywordIndex([f"{fact_key(e.content)} {e.said}" for e in events])
        with self._lock:
            self._indexes[key] = (count, got, index)
            self._indexes.move_to_end(key)
            while len(self._indexes) > 1 and sum(e[0] for e in self._indexes.values()) > self.max_events:
                self._indexes.popitem(last=False)
        return got, index


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
