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
import hashlib
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from memory.config import ForgettingPolicy, MemoryConfig
from memory.errors import StoreUnavailableError
from memory.events import EventDraft, MemoryEvent, ScoredEvent, Turn, utcnow
from memory.implications import TOPICS
from memory.protocols import Embedder
from memory.retrieval import fact_key, score, should_forget

log = logging.getLogger(__name__)

WriteAction = Literal["created", "merged", "superseded", "unchanged"]


@dataclass(frozen=True)
class MemoryWrite:
    """What `add` did with one draft.

    Attributes:
        event: the event as stored now (the merged one for "merged").
        action: "created", "merged" (same fact told again: mention count rose),
            "superseded" (a changed fact replaced `replaced`), or "unchanged" (these
            turns were already written: a retried write is a no-op).
        replaced: the id of the superseded event, for "superseded".
    """

    event: MemoryEvent
    action: WriteAction
    replaced: str | None = None


def player_prefix(player_id: str) -> str:
    """The start of every collection name of this player (a hash: any id gives a valid name)."""
    return "mem-" + hashlib.sha256(player_id.encode("utf-8")).hexdigest()[:32]


def collection_name(player_id: str, npc_id: str) -> str:
    """The collection of what `player_id` told `npc_id`."""
    return f"{player_prefix(player_id)}-{hashlib.sha256(npc_id.encode('utf-8')).hexdigest()[:16]}"


# Chroma keeps new vectors in a log until an HNSW sync; every query reads the log, so a
# short log keeps small collections fast (measured: 8.7 ms -> 4.9 ms p50 at 2,000 collections).
COLLECTION_METADATA = {"hnsw:space": "cosine", "hnsw:batch_size": 2, "hnsw:sync_threshold": 2}


def raise_open_file_limit(target: int = 65536) -> int:
    """Lifts this process's soft limit on open files towards `target`; returns the new limit.

    Embedded Chroma sizes its cache of loaded HNSW indexes as (open-file limit) / 5. At the
    usual soft limit of 1,024 only ~200 collections stay loaded, so with one collection per
    player every search beyond the 200 most recent players reloads an index from disk
    (measured: ~15 ms instead of ~1 ms). It must run before the client is created.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft


_warned_heap = False


def _warn_unscrubbed_heap() -> None:
    """Once per process: without heap scrubbing a hard delete can leave text in other index files."""
    global _warned_heap
    from memory.heap_hygiene import applies_here, scrubbing_active

    if not _warned_heap and applies_here() and not scrubbing_active():
        _warned_heap = True
        log.warning(
            "heap scrubbing is off: after a hard delete, embedded Chroma's index files of other players may "
            "still hold fragments of the deleted text; start through `companion` or `companion-server`, or call "
            "memory.heap_hygiene.reexec_with_heap_scrubbing() first"
        )


def chroma_settings():
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


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
        self._topic_vectors: list[tuple[np.ndarray, np.ndarray]] | None = None

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def embedded(
        cls, path: str | Path, embedder: Embedder, config: MemoryConfig | None = None
    ) -> ChromaMemoryStore:
        """A PersistentClient in directory `path` (created if missing)."""
        import chromadb

        path = Path(path).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        raise_open_file_limit()
        _warn_unscrubbed_heap()
        try:
            client = chromadb.PersistentClient(path=str(path), settings=chroma_settings())
        except Exception as e:
            raise StoreUnavailableError(f"could not open the Chroma database in {path}: {e}") from e
        return cls(client, embedder, config, sqlite_path=path / "chroma.sqlite3")

    @classmethod
    def remote(cls, url: str, embedder: Embedder, config: MemoryConfig | None = None) -> ChromaMemoryStore:
        """An HttpClient to a Chroma server at `url` (e.g. http://127.0.0.1:8000)."""
        from urllib.parse import urlparse

        import chromadb

        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise StoreUnavailableError(
                f"Chroma URL {url!r} is not an http(s) URL like http://127.0.0.1:8000."
            )
        try:
            client = chromadb.HttpClient(
                host=parsed.hostname,
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings(),
            )
            client.heartbeat()
        except Exception as e:
            raise StoreUnavailableError(
                f"could not reach the Chroma server at {url}: {e}. Start one with `chroma run --path DIR`, "
                "or leave the Chroma URL unset to use the embedded store."
            ) from e
        return cls(client, embedder, config)

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
        vectors = self.embedder.embed([fact_key(d.content) for d in drafts])

        def write(collection) -> list[MemoryWrite]:
            return [
                self._write_one(collection, draft, vector, player_id, npc_id, turns)
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

    def _write_one(self, collection, draft, vector, player_id, npc_id, turns) -> MemoryWrite:
        event_id = _stable_id(player_id, npc_id, draft, turns)
        found = collection.get(ids=[event_id], include=["metadatas"])
        if found["ids"]:
            return MemoryWrite(_event_of(found["metadatas"][0]), "unchanged")
        now = max((t.at for t in turns), default=None) or utcnow()
        turn_ids = [t.id for t in turns]
        duplicate = self._nearest_active(collection, vector, event_type=draft.type)
        if duplicate is not None and duplicate[1] >= self.config.duplicate_similarity:
            old = duplicate[0]
            if turn_ids and set(turn_ids) <= set(old.source_turn_ids):
                return MemoryWrite(old, "unchanged")
            merged = old.model_copy(
                update={
                    "mention_count": old.mention_count + 1,
                    "updated_at": max(now, old.updated_at),
                    "importance": max(old.importance, draft.importance),
                    "source_turn_ids": old.source_turn_ids
                    + [t for t in turn_ids if t not in old.source_turn_ids],
                }
            )
            collection.update(ids=[merged.id], metadatas=[event_metadata(merged)])
            return MemoryWrite(merged, "merged")
        event = MemoryEvent.from_draft(draft, player_id=player_id, npc_id=npc_id, turns=turns, id=event_id)
        previous = self._active_in_slot(collection, draft.slot) if draft.slot else None
        if previous is not None:
            event = event.model_copy(update={"supersedes": previous.id})
            retired = previous.model_copy(
                update={"superseded_by": event.id, "updated_at": max(now, previous.updated_at)}
            )
            collection.update(ids=[retired.id], metadatas=[event_metadata(retired)])
        collection.add(ids=[event.id], embeddings=[vector], metadatas=[event_metadata(event)])
        if previous is not None:
            return MemoryWrite(event, "superseded", replaced=previous.id)
        return MemoryWrite(event, "created")

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
                c, query_vector, k=k, include_superseded=include_superseded, now=now
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
    ) -> list[ScoredEvent]:
        """The store's query alone, for a query already embedded (the benchmark times this)."""
        now = now or utcnow()
        queries = [query_vector, *self._implied_concerns(query_vector)]
        result = collection.query(
            query_embeddings=np.stack(queries),
            n_results=k * self.config.candidates_per_result,
            include=["metadatas", "distances"],
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
        scored = [score(_event_of(meta), rel, now, self.config.weights) for rel, meta in best.values()]
        scored.sort(key=lambda s: s.score, reverse=True)
        return scored[:k]

    def list_sync(
        self, *, player_id: str, npc_id: str | None = None, include_superseded: bool = True
    ) -> list[MemoryEvent]:
        from chromadb.errors import NotFoundError

        try:
            return _events_in(self._collections_of(player_id, npc_id), include_superseded=include_superseded)
        except NotFoundError:  # a handle went stale: another process deleted the collection
            self._forget_handles(player_id)
            return _events_in(self._collections_of(player_id, npc_id), include_superseded=include_superseded)

    def delete_sync(self, *, player_id: str, npc_id: str | None = None) -> int:
        with self._player_lock(player_id):
            collections = self._collections_of(player_id, npc_id)  # one scan of the collection list
            if not collections:
                return 0
            events = _events_in(collections, include_superseded=True)
            segments = self._segment_dirs(collections)
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
        self._vacuum()
        return len(events)

    def _segment_dirs(self, collections) -> list[Path]:
        """The on-disk index folders of `collections` (embedded store only)."""
        if self.sqlite_path is None or not self.sqlite_path.exists():
            return []
        ids = [str(c.id) for c in collections]
        with sqlite3.connect(self.sqlite_path, timeout=30) as connection:
            rows = connection.execute(
                f"SELECT id FROM segments WHERE collection IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
        return [
            self.sqlite_path.parent / row[0] for row in rows if (self.sqlite_path.parent / row[0]).is_dir()
        ]

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
            self._vacuum()
        return [e.id for e in faded]

    def count(self, *, player_id: str, npc_id: str | None = None) -> int:
        return sum(c.count() for c in self._collections_of(player_id, npc_id))

    # ---- helpers ---------------------------------------------------------------------------

    def _collection(self, player_id: str, npc_id: str, *, create: bool):
        """The only way to a player's events with one NPC; None when there are none and create is False."""
        from chromadb.errors import NotFoundError

        if not player_id or not npc_id:
            raise ValueError(
                "player_id and npc_id must be non-empty; every memory belongs to a player and an NPC."
            )
        cached = self._collections.get((player_id, npc_id))
        if cached is not None:
            return cached
        name = collection_name(player_id, npc_id)
        try:
            if create:
                metadata = COLLECTION_METADATA | {"player_id": player_id, "npc_id": npc_id}
                collection = self.client.get_or_create_collection(
                    name, metadata=metadata, embedding_function=None
                )
            else:
                collection = self.client.get_collection(name, embedding_function=None)
        except NotFoundError:
            return None
        except Exception as e:
            raise StoreUnavailableError(f"the Chroma store failed: {type(e).__name__}: {e}") from e
        self._collections[(player_id, npc_id)] = collection
        return collection

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

    def _nearest_active(self, collection, vector, *, event_type: str) -> tuple[MemoryEvent, float] | None:
        where = {"$and": [{"type": str(event_type)}, {"active": True}]}
        result = collection.query(
            query_embeddings=[vector], n_results=1, where=where, include=["metadatas", "distances"]
        )
        if not result["ids"][0]:
            return None
        return _event_of(result["metadatas"][0][0]), 1.0 - result["distances"][0][0]

    def _active_in_slot(self, collection, slot: str) -> MemoryEvent | None:
        where = {"$and": [{"slot": slot}, {"active": True}]}
        found = collection.get(where=where, include=["metadatas"])
        events = sorted((_event_of(m) for m in found["metadatas"]), key=lambda e: e.updated_at)
        return events[-1] if events else None

    def warm(self) -> None:
        """Embeds the implication topics now, not on the first search."""
        self._implied_concerns(np.zeros(self.embedder.dimension, dtype=np.float32))

    def _implied_concerns(self, query_vector: np.ndarray) -> list[np.ndarray]:
        """Concern vectors of the topics the query is close to (see memory.implications)."""
        if self._topic_vectors is None:
            self._topic_vectors = [
                (
                    np.asarray(self.embedder.embed(list(t.examples)), dtype=np.float32),
                    np.asarray(self.embedder.embed([t.concerns])[0], dtype=np.float32),
                )
                for t in TOPICS
            ]
        threshold = self.config.implication_threshold
        return [
            concern
            for examples, concern in self._topic_vectors
            if float((examples @ query_vector).max()) >= threshold
        ]

    def _vacuum(self) -> None:
        """Rewrites the embedded database so deleted rows leave no bytes behind."""
        if self.sqlite_path is None or not self.sqlite_path.exists():
            return
        for attempt in range(10):  # Chroma may hold its write lock briefly; wait up to ~11 s in all
            try:
                with sqlite3.connect(self.sqlite_path, timeout=30) as connection:
                    connection.execute("VACUUM")
                return
            except sqlite3.OperationalError as e:  # another writer holds the lock; try again shortly
                log.warning("VACUUM of %s failed (%s), attempt %d", self.sqlite_path, e, attempt + 1)
                time.sleep(0.2 * (attempt + 1))
        log.error(
            "could not VACUUM %s; deleted rows may linger on disk until the next delete", self.sqlite_path
        )


def _events_in(collections, *, include_superseded: bool) -> list[MemoryEvent]:
    """Every event of `collections`, oldest first."""
    events = []
    for collection in collections:
        found = collection.get(include=["metadatas"])
        events += [_event_of(m) for m in found["metadatas"] if include_superseded or m["active"]]
    return sorted(events, key=lambda e: (e.created_at, e.id))


def _stable_id(player_id: str, npc_id: str, draft: EventDraft, turns: Sequence[Turn]) -> str:
    """The same fact from the same turns always gets the same id (idempotent writes)."""
    turn_part = "|".join(sorted(t.id for t in turns)) if turns else datetime.now(UTC).isoformat()
    key = "\x1f".join([player_id, npc_id, str(draft.type), draft.content, turn_part])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def event_metadata(event: MemoryEvent) -> dict[str, Any]:
    return {
        "type": str(event.type),
        "slot": event.slot or "",
        "active": event.active,
        "importance": event.importance,
        "updated_ts": event.updated_at.timestamp(),
        "event": event.model_dump_json(),
    }


def _event_of(metadata: dict[str, Any]) -> MemoryEvent:
    return MemoryEvent.model_validate(json.loads(metadata["event"]))
