"""The memory writer on a Redis stream: at-least-once delivery, idempotent writes.

`submit` appends a job (a player's and an NPC's finished turns) to the stream
`companion:memory-writes`; a worker in every server process reads it through the consumer
group `writers`, summarizes, writes to the store, and only then acknowledges. A process
that dies between reading and acknowledging leaves the job pending: on restart (with the
same `worker_name`) it reads its own pending jobs first, and any process claims jobs that
stayed pending longer than `claim_idle_ms`. A job can therefore run twice, and the store's
writes are idempotent per source turns (`ChromaMemoryStore.add`), so it is written once.
A job that fails `max_deliveries` times moves to `companion:memory-writes:dead`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from companion.erasure import ErasureLog, InProcessErasureLog
from companion.memory_writer import WriteListener, notify, write_unless_erased
from memory.events import Turn
from memory.protocols import MemoryStore, Summarizer
from server.redis_store import PREFIX, REDIS_DOWN, reachable

log = logging.getLogger(__name__)

STREAM = f"{PREFIX}memory-writes"
DEAD = f"{STREAM}:dead"
GROUP = "writers"


class RedisMemoryWriter:
    """Args:
    summarizer: turns -> event drafts.
    store: where events go.
    client, url: the Redis connection and its URL (for messages).
    consumer: this process's name in the group; stable across restarts.
    failpoints: testing only: {"writer.after_consume": "exit"} ends the process there.
    erasures: hard deletes (in Redis, shared by every process); a job whose turns began
        before one of its player's is acknowledged without writing.
    """

    def __init__(
        self,
        summarizer: Summarizer,
        store: MemoryStore,
        client: aioredis.Redis,
        url: str,
        *,
        consumer: str,
        failpoints: dict[str, str] | None = None,
        erasures: ErasureLog | None = None,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
    ):
        self.summarizer, self.store, self.client, self.url = summarizer, store, client, url
        self.consumer = consumer
        self.failpoints = failpoints or {}
        self.erasures = erasures or InProcessErasureLog()
        self.claim_idle_ms, self.max_deliveries = claim_idle_ms, max_deliveries
        self.listeners: list[WriteListener] = []
        self.problem: str | None = None  # why the last pass of the worker failed; None when it did not
        self._worker: asyncio.Task | None = None

    async def submit(
        self, turns: Sequence[Turn], *, player_id: str, npc_id: str, npc_name: str | None = None
    ) -> None:
        job = {
            "player_id": player_id,
            "npc_id": npc_id,
            "npc_name": npc_name,
            "turns": [t.model_dump(mode="json") for t in turns],
        }
        async with reachable(self.url):
            await self.client.xadd(STREAM, {"job": json.dumps(job)})

    async def start(self) -> None:
        async with reachable(self.url):
            await self._create_group()
        self._worker = asyncio.create_task(self._run(), name="memory-writer")

    async def _create_group(self) -> None:
        try:
            await self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    def health(self) -> str | None:
        """None when the worker runs and its last pass worked; else what is wrong."""
        if self._worker is None:
            return "not started"
        if self._worker.done():
            error = None if self._worker.cancelled() else self._worker.exception()
            return f"stopped ({error!r})" if error else "stopped"
        return self.problem

    async def drain(self, timeout_s: float = 60.0) -> None:
        """Waits until the group has nothing undelivered and nothing pending (all processes).

        Returns at once when this process's worker is stopped: queued jobs are durable in
        Redis, and the next start writes them.
        """
        if self._worker is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            async with reachable(self.url):
                queued = await self.client.xlen(STREAM)
                groups = await self.client.xinfo_groups(STREAM) if queued else []
            group = next((g for g in groups if g["name"] == GROUP), None)
            if group is None and not queued:
                return
            # no group but jobs queued: Redis came back empty and the worker is recreating the group
            if group is not None and group["pending"] == 0 and not group.get("lag"):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"memory writes still pending after {timeout_s} s: {group}")
            await asyncio.sleep(0.05)

    async def purge(self, player_id: str) -> int:
        """Removes the player's queued jobs (part of a hard delete); returns how many."""
        removed, start = 0, "-"
        async with reachable(self.url):
            while True:
                batch = await self.client.xrange(STREAM, min=start, count=500)
                if not batch:
                    return removed
                ids = [i for i, fields in batch if json.loads(fields["job"])["player_id"] == player_id]
                if ids:
                    await self.client.xack(STREAM, GROUP, *ids)
                    removed += await self.client.xdel(STREAM, *ids)
                if len(batch) < 500:
                    return removed
                start = "(" + batch[-1][0]

    async def _run(self) -> None:
        own_pending = True  # after a restart, first finish what this consumer read and never acked
        recreate, backoff = False, 0.5
        while True:
            try:
                if recreate:
                    await self._create_group()
                    recreate = False
                if own_pending:  # one pass; jobs that fail again are retried by the claim below
                    batch = await self._read("0", count=1000)
                    own_pending = False
                else:
                    _, batch, _ = await self.client.xautoclaim(
                        STREAM, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=16
                    )
                    if not batch:
                        batch = await self._read(">", block_ms=1000)
                for entry_id, fields in batch:
                    await self._process(entry_id, fields)
                backoff, self.problem = 0.5, None
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as e:
                self.problem = f"Redis unreachable ({e})"
                log.warning("memory writer: Redis unreachable (%s); retrying in %.1f s", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except ResponseError as e:
                if "NOGROUP" in str(e) or "UNBLOCKED" in str(e):
                    log.warning(
                        "memory writer: the stream or group is gone (a flushed Redis?); recreating it"
                    )
                    recreate = True
                    continue
                # e.g. WRONGTYPE: something else wrote the stream's key. Keep trying; /health says so.
                self.problem = f"Redis refused the queue's commands ({e})"
                log.error("memory writer: %s; retrying in %.1f s", self.problem, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _read(self, start: str, *, count: int = 16, block_ms: int | None = None) -> list:
        reply = await self.client.xreadgroup(
            GROUP, self.consumer, {STREAM: start}, count=count, block=block_ms
        )
        return [(i, f) for _, entries in reply for i, f in entries if f]

    async def _process(self, entry_id: str, fields: dict) -> None:
        self._failpoint("writer.after_consume")
        try:
            job = json.loads(fields["job"])
            turns = [Turn.model_validate(t) for t in job["turns"]]
            writes = await write_unless_erased(
                self.summarizer,
                self.store,
                self.erasures,
                turns,
                job["player_id"],
                job["npc_id"],
                job.get("npc_name"),
            )
        except Exception:
            log.exception("memory write %s failed; it stays pending and is retried", entry_id)
            await self._maybe_dead_letter(entry_id, fields)
            return
        self._failpoint("writer.after_write")
        await self.client.xack(STREAM, GROUP, entry_id)
        await self.client.xdel(STREAM, entry_id)
        notify(self.listeners, job["player_id"], job["npc_id"], writes)

    async def _maybe_dead_letter(self, entry_id: str, fields: dict) -> None:
        info = await self.client.xpending_range(STREAM, GROUP, min=entry_id, max=entry_id, count=1)
        if info and info[0]["times_delivered"] >= self.max_deliveries:
            await self.client.xadd(DEAD, {**fields, "id": entry_id})
            await self.client.xack(STREAM, GROUP, entry_id)
            await self.client.xdel(STREAM, entry_id)
            log.error("memory write %s failed %d times; moved to %s", entry_id, self.max_deliveries, DEAD)

    def _failpoint(self, name: str) -> None:
        if self.failpoints.get(name) == "exit":
            log.error("failpoint %s: exiting the process (testing)", name)
            os._exit(75)
