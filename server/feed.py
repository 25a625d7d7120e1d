"""Routes memory writes to the sockets that subscribed to that player and NPC.

In-process, the memory writer calls `WriteFeed.publish` directly. With Redis the writer
that handles a job may run in another server process, so writes travel over the Redis
channel `companion:memory-written` (`RedisFeedBridge`) and every process's feed hears them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable

import redis.asyncio as aioredis

from memory.consolidation import MemoryWrite
from memory.events import MemoryEvent
from server.redis_store import PREFIX, REDIS_DOWN

log = logging.getLogger(__name__)
CHANNEL = f"{PREFIX}memory-written"

Subscriber = Callable[[list[MemoryWrite]], None]


class WriteFeed:
    def __init__(self) -> None:
        self._subscribers: dict[tuple[str, str], set[Subscriber]] = defaultdict(set)

    def subscribe(self, player_id: str, npc_id: str, subscriber: Subscriber) -> Callable[[], None]:
        """Returns the function that unsubscribes."""
        key = (player_id, npc_id)
        self._subscribers[key].add(subscriber)
        return lambda: self._subscribers[key].discard(subscriber)

    def publish(self, player_id: str, npc_id: str, writes: list[MemoryWrite]) -> None:
        for subscriber in list(self._subscribers.get((player_id, npc_id), ())):
            subscriber(writes)


class RedisFeedBridge:
    """Publishes this process's writes on Redis and feeds every write heard there to `feed`."""

    def __init__(self, client: aioredis.Redis, feed: WriteFeed):
        self.client, self.feed = client, feed
        self._task: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    def listener(self, player_id: str, npc_id: str, writes: list[MemoryWrite]) -> None:
        message = json.dumps(
            {
                "player_id": player_id,
                "npc_id": npc_id,
                "writes": [
                    {"action": w.action, "replaced": w.replaced, "event": w.event.model_dump(mode="json")}
                    for w in writes
                ],
            }
        )
        task = asyncio.get_running_loop().create_task(self.client.publish(CHANNEL, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def start(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL)
        self._task = asyncio.create_task(self._run(pubsub), name="memory-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, pubsub) -> None:
        try:
            while True:
                try:
                    message = await pubsub.get_message(timeout=1.0)
                except REDIS_DOWN as e:
                    log.warning("memory feed: Redis unreachable (%s); retrying", e)
                    await asyncio.sleep(1.0)
                    continue
                if message is None or message.get("type") != "message":
                    continue
                data = json.loads(message["data"])
                writes = [
                    MemoryWrite(MemoryEvent.model_validate(w["event"]), w["action"], w["replaced"])
                    for w in data["writes"]
                ]
                self.feed.publish(data["player_id"], data["npc_id"], writes)
        finally:
            await pubsub.aclose()
