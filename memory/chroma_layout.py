"""How memory sits in Chroma: collection names per player and NPC, the client's settings,
the open-file limit embedded Chroma needs, and the disk clean-up after a hard delete."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from pathlib import Path

from memory.errors import StoreUnavailableError

log = logging.getLogger(__name__)


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


def warn_unscrubbed_heap() -> None:
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


def segment_dirs(sqlite_path: Path | None, collections) -> list[Path]:
    """The on-disk index folders of `collections` (embedded store only)."""
    if sqlite_path is None or not sqlite_path.exists():
        return []
    ids = [str(c.id) for c in collections]
    with sqlite3.connect(sqlite_path, timeout=30) as connection:
        rows = connection.execute(
            f"SELECT id FROM segments WHERE collection IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
    return [sqlite_path.parent / row[0] for row in rows if (sqlite_path.parent / row[0]).is_dir()]


def vacuum(sqlite_path: Path | None) -> None:
    """Rewrites the embedded database so deleted rows leave no bytes behind."""
    if sqlite_path is None or not sqlite_path.exists():
        return
    for attempt in range(10):  # Chroma may hold its write lock briefly; wait up to ~11 s in all
        try:
            with sqlite3.connect(sqlite_path, timeout=30) as connection:
                connection.execute("VACUUM")
            return
        except sqlite3.OperationalError as e:  # another writer holds the lock; try again shortly
            log.warning("VACUUM of %s failed (%s), attempt %d", sqlite_path, e, attempt + 1)
            time.sleep(0.2 * (attempt + 1))
    log.error("could not VACUUM %s; deleted rows may linger on disk until the next delete", sqlite_path)


def embedded_client(path: Path):
    """A PersistentClient in `path` (created if missing), and its database file."""
    import chromadb

    path.mkdir(parents=True, exist_ok=True)
    raise_open_file_limit()
    warn_unscrubbed_heap()
    try:
        client = chromadb.PersistentClient(path=str(path), settings=chroma_settings())
    except Exception as e:
        raise StoreUnavailableError(f"could not open the Chroma database in {path}: {e}") from e
    return client, path / "chroma.sqlite3"


def remote_client(url: str):
    """An HttpClient to a Chroma server at `url` that answered a heartbeat."""
    from urllib.parse import urlparse

    import chromadb

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise StoreUnavailableError(f"Chroma URL {url!r} is not an http(s) URL like http://127.0.0.1:8000.")
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
    return client


def open_collection(client, player_id: str, npc_id: str, *, create: bool):
    """The player-NPC collection (created when `create`); None when it does not exist.

    Raises:
        StoreUnavailableError: Chroma failed (down, unreachable, or another error).
    """
    from chromadb.errors import NotFoundError

    name = collection_name(player_id, npc_id)
    try:
        if create:
            metadata = COLLECTION_METADATA | {"player_id": player_id, "npc_id": npc_id}
            return client.get_or_create_collection(name, metadata=metadata, embedding_function=None)
        return client.get_collection(name, embedding_function=None)
    except NotFoundError:
        return None
    except Exception as e:
        raise StoreUnavailableError(f"the Chroma store failed: {type(e).__name__}: {e}") from e
