"""The Chroma memory store: one collection per player-NPC pair, so isolation holds by construction.

The events a player told an NPC live in a collection whose name is derived from the
player id and the NPC id, and every method reaches a collection only through
`_collection(player_id, npc_id)`. A search made for player A therefore has no handle on
player B's vectors, whatever filter a caller forgets. Searches use no metadata filter:
Chroma evaluates `where` clauses against one SQLite table shared by all collections,
which costs tens of milliseconds at 100k events; superseded events are dropped in
Python instead. Small HNSW sync thresholds keep each collection's write-ahead log short,
since every query reads it. benchmarks/bench_memory.py measures this layout against one
collection filtered by player and NPC.

Records keep the fact in metadata (JSON), not as a Chroma document: documents also
feed Chroma's full-text index, whose deleted terms linger on disk. A hard delete
removes the collections, removes their index folders (embedded Chroma can leave them
behind), and VACUUMs the embedded database, so nothing of the player remains on disk.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from memory.chroma_layout import (
    chroma_settings,
    embedded_client,
    open_collection,
    player_prefix,
    remote_client,
    segment_dirs,
    vacuum,
)
from memory.config import ForgettingPolicy, MemoryConfig
from memory.consolidation import MemoryWrite, events_in, write_one
from memory.errors import StoreUnavailableError
from memory.events import EventDraft, MemoryEvent, ScoredEvent, Turn, said_in, utcnow
from memory.implications import ImpliedConcerns
from memory.protocols import Embedder
from memory.queries import KeywordIndexes, nearest_events, ranked
from memory.retrieval import fact_key, should_forget

log = logging.getLogger(__name__)


class ChromaMemoryStore:
    """Memory events in Chroma, one collection per player, searched with local embeddings.

    Build it with `embedded(path, ...)` (PersistentClient, the default),
    `remote(url, ...)` (HttpClient to `chroma run`), or `in_memory(...)` (tests).

    Args:
        client: a chromadb client.
        embedder: local sentence embeddings (never Chroma's downloading default).
        config: consolidation and retrieval settings.
        sqlite_path: the embedded database file, VACUUMed after hard deletes.
    """

    def __init__(
        self,
        client,
        embedder: Embedder,
        config: MemoryConfig | None = None,
        *,
        sqlite_path: Path | None = None,
    ):
        self.client = client
        self.embedder = embedder
        self.config = config or MemoryConfig()
        self.sqlite_path = sqlite_path
        self._collections: dict[tuple[str, str], Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._concerns = ImpliedConcerns(embedder, self.config.implication_threshold)
        self._keywords = KeywordIndexes()

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def embedded(
        cls, path: str | Path, embedder: Embedder, config: MemoryConfig | None = None
    ) -> ChromaMemoryStore:
        """A PersistentClient in directory `path` (created if missing)."""
        client, sqlite_path = embedded_client(Path(path).expanduser())
        return cls(client, embedder, config, sqlite_path=sqlite_path)

    @classmethod
    def remote(cls, url: str, embedder: Embedder, config: MemoryConfig | None = None) -> ChromaMemoryStore:
        """An HttpClient to a Chroma server at `url` (e.g. http://127.0.0.1:8000)."""
        return cls(remote_client(url), embedder, config)

    @classmethod
    def in_memory(cls, embedder: Embedder, config: MemoryConfig | None = None) -> ChromaMemoryStore:
        """Chroma's in-memory client (real Chroma, nothing on disk): for tests and demos."""
        import chromadb

        return cls(chromadb.EphemeralClient(settings=chroma_settings()), embedder, config)

    # ---- public API (async; Chroma's client is blocking, so it runs in a thread) ------

    async def add(
        self, drafts: Sequence[EventDraft], *, player_id: str, npc_id: str, turns: Sequence[Turn] = ()
    ) -> list[MemoryWrite]:
        """Writes drafts as events, consolidating: duplicates merge, changed facts supersede.

        Writing the same drafts from the same turns again changes nothing, so a memory
        writer may retry after a crash (at-least-once delivery, exactly-once effect).
        """
        return await asyncio.to_thread(self.add_sync, drafts, player_id=player_id, npc_id=npc_id, turns=turns)

    async def search(
        self,
        query: str,
        *,
        player_id: str,
        npc_id: str,
        k: int = 5,
        include_superseded: bool = False,
        now: datetime | None = None,
    ) -> list[ScoredEvent]:
        """The k best events of this player and NPC for `query`, best first."""
        return await asyncio.to_thread(
            self.search_sync,
            query,
            player_id=player_id,
            npc_id=npc_id,
            k=k,
            include_superseded=include_superseded,
            now=now,
        )

    async def list(
        self, *, player_id: str, npc_id: str | None = None, include_superseded: bool = True
    ) -> list[MemoryEvent]:
        """Every event of the player (with one NPC, or all), oldest first."""
        return await asyncio.to_thread(
            self.list_sync, player_id=player_id, npc_id=npc_id, include_superseded=include_superseded
        )

    async def related(
        self, texts: Sequence[str], *, player_id: str, npc_id: str, k: int = 4
    ) -> list[MemoryEvent]:
        """The events nearest to any of `texts` (superseded ones too, with what replaced them)."""
        return await asyncio.to_thread(self.related_sync, texts, player_id=player_id, npc_id=npc_id, k=k)

    async def retract(self, writes: Sequence[MemoryWrite], *, player_id: str, npc_id: str) -> int:
        """Deletes the events `writes` created; returns how many."""
        return await asyncio.to_thread(self.retract_sync, writes, player_id=player_id, npc_id=npc_id)

    async def delete(self, *, player_id: str, npc_id: str | None = None) -> int:
        """Hard-deletes the player's events (with one NPC, or all); returns how many."""
        return await asyncio.to_thread(self.delete_sync, player_id=player_id, npc_id=npc_id)

    async def export(self, *, player_id: str, npc_id: str | None = None) -> dict[str, Any]:
        """Everything stored about the player, as a JSON-ready dict."""
        events = await self.list(player_id=player_id, npc_id=npc_id)
        return {
            "player_id": player_id,
            "npc_id": npc_id,
            "exported_at": utcnow().isoformat(),
            "events": [e.model_dump(mode="json") for e in events],
        }

    async def forget(
        self,
        *,
        player_id: str,
        npc_id: str | None = None,
        policy: ForgettingPolicy,
        now: datetime | None = None,
    ) -> list[str]:
        """Hard-deletes events the policy lets fade; returns their ids."""
        return await asyncio.to_thread(
            self.forget_sync, player_id=player_id, npc_id=npc_id, policy=policy, now=now
        )

    # ---- blocking implementation -------------------------------------------------------

    def add_sync(
        self, drafts: Sequence[EventDraft], *, player_id: str, npc_id: str, turns: Sequence[Turn] = ()
    ) -> list[MemoryWrite]:
        if not drafts:
            return []
        turns = list(turns)
        said = said_in(turns)
        vectors = list(self.embedder.embed([fact_key(d.content) for d in drafts] + ([said] if said else [])))
        said_vector = np.asarray(vectors.pop(), dtype=np.float32) if said else None

        def write(collection) -> list[MemoryWrite]:
            common = {"player_id": player_id, "npc_id": npc_id, "turns": turns, "config": self.config}
            return [
                write_one(collection, draft, vector, **common, said_vector=said_vector)
                for draft, vector in zip(drafts, vectors, strict=True)
            ]

        with self._player_lock(player_id):
            return self._on_collection(player_id, npc_id, write, create=True)

    def retract_sync(self, writes: Sequence[MemoryWrite], *, player_id: str, npc_id: str) -> int:
        """Deletes the events `writes` created (a write that lost a race with a hard delete)."""
        ids = [w.event.id for w in writes if w.action in ("created", "superseded")]
        if not ids:
            return 0
        with self._player_lock(player_id):
            self._on_collection(player_id, npc_id, lambda c: c.delete(ids=ids), create=False)
        return len(ids)

    def search_sync(
        self,
        query: str,
        *,
        player_id: str,
        npc_id: str,
        k: int = 5,
        include_superseded: bool = False,
        now: datetime | None = None,
    ) -> list[ScoredEvent]:
        if k < 1 or self._collection(player_id, npc_id, create=False) is None:
            return []
        query_vector = np.asarray(self.embedder.embed([query])[0], dtype=np.float32)
        found = self._on_collection(
            player_id,
            npc_id,
            lambda c: self.search_by_vector(
                c, query_vector, k=k, include_superseded=include_superseded, now=now, query_text=query
            ),
            create=False,
        )
        return found or []

    def search_by_vector(
        self,
        collection,
        query_vector: np.ndarray,
        *,
        k: int,
        include_superseded: bool = False,
        now: datetime | None = None,
        query_text: str | None = None,
    ) -> list[ScoredEvent]:
        """The store's query alone, for a query already embedded (the benchmark times this);
        with `query_text`, events sharing its rarer words are candidates too (hybrid search)."""
        candidates = k * self.config.candidates_per_result
        hybrid = bool(query_text) and self.config.weights.keyword > 0
        return ranked(
            collection,
            np.stack([query_vector, *self._concerns.near(query_vector)]),
            k=k,
            candidates=candidates,
            include_superseded=include_superseded,
            now=now or utcnow(),
            weights=self.config.weights,
            keyword=self._keywords.top(collection, query_text, candidates) if hybrid else None,
            one_per_line=self.config.one_per_line,
        )

    def related_sync(
        self, texts: Sequence[str], *, player_id: str, npc_id: str, k: int = 4
    ) -> list[MemoryEvent]:
        texts = [t for t in texts if t.strip()]
        if not texts or k < 1 or self._collection(player_id, npc_id, create=False) is None:
            return []
        vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        found = self._on_collection(
            player_id, npc_id, lambda c: nearest_events(c, vectors, k=k), create=False
        )
        return found or []

    def list_sync(
        self, *, player_id: str, npc_id: str | None = None, include_superseded: bool = True
    ) -> list[MemoryEvent]:
        from chromadb.errors import NotFoundError

        try:
            return events_in(self._collections_of(player_id, npc_id), include_superseded=include_superseded)
        except NotFoundError:  # a handle went stale: another process deleted the collection
            self._forget_handles(player_id)
            return events_in(self._collections_of(player_id, npc_id), include_superseded=include_superseded)

    def delete_sync(self, *, player_id: str, npc_id: str | None = None) -> int:
        with self._player_lock(player_id):
            collections = self._collections_of(player_id, npc_id)  # one scan of the collection list
            if not collections:
                return 0
            events = events_in(collections, include_superseded=True)
            segments = segment_dirs(self.sqlite_path, collections)
            self._keywords.forget(c.id for c in collections)  # their words, held in memory
            for collection in collections:
                self.client.delete_collection(collection.name)
                self._collections = {
                    key: c for key, c in self._collections.items() if c.name != collection.name
                }
            forget_cached = getattr(self.embedder, "forget_texts", None)
            if forget_cached is not None:
                forget_cached([fact_key(e.content) for e in events])
            for directory in segments:  # embedded Chroma can leave a deleted collection's index files behind
                shutil.rmtree(directory, ignore_errors=True)
        vacuum(self.sqlite_path)
        return len(events)

    def forget_sync(
        self,
        *,
        player_id: str,
        npc_id: str | None = None,
        policy: ForgettingPolicy,
        now: datetime | None = None,
    ) -> list[str]:
        now = now or utcnow()
        with self._player_lock(player_id):
            faded = [
                e for e in self.list_sync(player_id=player_id, npc_id=npc_id) if should_forget(e, now, policy)
            ]
            for event in faded:
                self._collection(player_id, event.npc_id, create=False).delete(ids=[event.id])
        if faded:
            vacuum(self.sqlite_path)
        return [e.id for e in faded]

    def heartbeat(self) -> None:
        """Returns when Chroma answers (blocking); raises when it does not."""
        self.client.heartbeat()

    def count(self, *, player_id: str, npc_id: str | None = None) -> int:
        return sum(c.count() for c in self._collections_of(player_id, npc_id))

    # ---- helpers ---------------------------------------------------------------------------

    def _collection(self, player_id: str, npc_id: str, *, create: bool):
        """The only way to a player's events with one NPC; None when there are none and create is False."""
        if not player_id or not npc_id:
            raise ValueError(
                "player_id and npc_id must be non-empty; every memory belongs to a player and an NPC."
            )
        cached = self._collections.get((player_id, npc_id))
        if cached is None:
            cached = open_collection(self.client, player_id, npc_id, create=create)
            if cached is not None:
                self._collections[(player_id, npc_id)] = cached
        return cached

    def _on_collection(self, player_id: str, npc_id: str, use, *, create: bool):
        """`use(collection)`; None when there is no collection (and create is False).

        Collection handles are cached. Another process on the same Chroma server can delete
        the collection (a hard delete there) and the cached handle then fails with
        NotFoundError: the handle is dropped and `use` runs once more on a fresh lookup.
        """
        from chromadb.errors import NotFoundError

        collection = self._collection(player_id, npc_id, create=create)
        if collection is None:
            return None
        try:
            return use(collection)
        except NotFoundError:
            self._forget_handles(player_id, npc_id)
            collection = self._collection(player_id, npc_id, create=create)
            return None if collection is None else use(collection)

    def _forget_handles(self, player_id: str, npc_id: str | None = None) -> None:
        self._collections = {
            key: c
            for key, c in self._collections.items()
            if key[0] != player_id or (npc_id is not None and key[1] != npc_id)
        }

    def _collections_of(self, player_id: str, npc_id: str | None) -> list:
        """The player's collections: with one NPC, or (by name prefix) with all of them."""
        if npc_id is not None:
            collection = self._collection(player_id, npc_id, create=False)
            return [collection] if collection is not None else []
        prefix = player_prefix(player_id) + "-"
        try:
            names = [c.name for c in self.client.list_collections() if c.name.startswith(prefix)]
        except Exception as e:
            raise StoreUnavailableError(f"the Chroma store failed: {type(e).__name__}: {e}") from e
        found = [self.client.get_collection(name, embedding_function=None) for name in names]
        return [c for c in found if c.metadata.get("player_id") == player_id]

    def _player_lock(self, player_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(player_id, threading.Lock())

    def warm(self) -> None:
        """Embeds the implication topics now, not on the first search."""
        self._concerns.near(np.zeros(self.embedder.dimension, dtype=np.float32))
