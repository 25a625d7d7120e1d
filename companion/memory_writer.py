"""The memory writer: summarizes finished turns into events, off the reply's path.

`InProcessMemoryWriter` is a queue and a worker task in this process; the server adds
a Redis-backed writer with the same interface.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from companion.erasure import ErasureLog, InProcessErasureLog
from memory.consolidation import MemoryWrite
from memory.events import Turn
from memory.protocols import MemoryStore, Summarizer

log = logging.getLogger(__name__)


# Called after a batch of turns was written: (player_id, npc_id, what changed).
WriteListener = Callable[[str, str, list[MemoryWrite]], None]


class MemoryWriter(Protocol):
    """Accepts turns to remember; `submit` never waits for the summarizer or the store.

    `submit` only enqueues (in-process: a queue put; Redis: one XADD), so a reply is never
    held up by summarizing or by the store. Listeners hear about every write.
    """

    listeners: list[WriteListener]

    async def submit(
        self, turns: Sequence[Turn], *, player_id: str, npc_id: str, npc_name: str | None = None
    ) -> None: ...

    async def drain(self) -> None: ...

    async def purge(self, player_id: str) -> int:
        """Part of a hard delete: drops the player's queued writes; returns how many."""
        ...

    def health(self) -> str | None:
        """None while writes go through; else what is wrong."""
        ...

    async def close(self) -> None: ...


class InProcessMemoryWriter:
    """A background task that summarizes and stores submitted turns in order.

    Args:
        summarizer: turns -> event drafts.
        store: where events go.
        erasures: hard deletes; turns that began before one of their player are dropped.
    """

    def __init__(self, summarizer: Summarizer, store: MemoryStore, erasures: ErasureLog | None = None):
        self.summarizer = summarizer
        self.store = store
        self.erasures = erasures or InProcessErasureLog()
        self.listeners: list[WriteListener] = []
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(
        self, turns: Sequence[Turn], *, player_id: str, npc_id: str, npc_name: str | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (the old one took its worker with it)
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        self._queue.put_nowait((list(turns), player_id, npc_id, npc_name))

    async def drain(self) -> None:
        """Waits until everything submitted so far (in this event loop) is written."""
        if self._queue is not None and self._loop is asyncio.get_running_loop():
            await self._queue.join()

    async def purge(self, player_id: str) -> int:
        """In-process, queued writes are few and the erasure log drops them; they are let
        land (and skipped) so that the store delete that follows sees everything."""
        await self.drain()
        return 0

    def health(self) -> str | None:
        if self._worker is not None and self._worker.done() and not self._worker.cancelled():
            return f"stopped ({self._worker.exception()!r})"
        return None

    async def close(self) -> None:
        await self.drain()
        if self._worker is not None:
            self._worker.cancel()
        self._worker = self._queue = self._loop = None

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            turns, player_id, npc_id, npc_name = await queue.get()
            try:
                writes = await write_unless_erased(
                    self.summarizer, self.store, self.erasures, turns, player_id, npc_id, npc_name
                )
                notify(self.listeners, player_id, npc_id, writes)
            except Exception:  # a failed write must not kill the worker; it is logged with its turns
                log.exception(
                    "memory write failed for player %s, NPC %s, turns %s",
                    player_id,
                    npc_id,
                    [t.id for t in turns],
                )
            finally:
                queue.task_done()


async def write_unless_erased(
    summarizer: Summarizer,
    store: MemoryStore,
    erasures: ErasureLog,
    turns: Sequence[Turn],
    player_id: str,
    npc_id: str,
    npc_name: str | None,
) -> list[MemoryWrite]:
    """Summarizes and stores `turns`, unless their player was hard-deleted after they began.

    The erasure is checked before and again after the write: a delete that lands while the
    write runs (in another process, between the check and the write) would otherwise be
    undone by it, so what this write created is taken back.
    """
    since = turns[0].at
    if await erasures.erased_after(player_id=player_id, npc_id=npc_id, since=since):
        return []
    drafts = await summarizer.summarize(turns, npc_name=npc_name)
    writes = await store.add(drafts, player_id=player_id, npc_id=npc_id, turns=turns)
    if writes and await erasures.erased_after(player_id=player_id, npc_id=npc_id, since=since):
        await store.retract(writes, player_id=player_id, npc_id=npc_id)
        log.info(
            "player %s was hard-deleted while their turn was written; the write is taken back", player_id
        )
        return []
    return writes


def notify(
    listeners: Sequence[WriteListener], player_id: str, npc_id: str, writes: list[MemoryWrite]
) -> None:
    """Tells each listener about `writes`; a failing listener is logged, never fatal to the writer."""
    if not writes:
        return
    for listener in listeners:
        try:
            listener(player_id, npc_id, writes)
        except Exception:
            log.exception("memory write listener %r failed", listener)
