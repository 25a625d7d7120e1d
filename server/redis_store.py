"""Redis implementations of the short-term buffer, sessions and rate limits.

Keys (all under the `companion:` prefix; player ids here are already scoped by API key):
    companion:buf:<player>|<npc>    list of BufferedTurn JSON, newest last, trimmed
    companion:bufidx:<player>       set of the player's NPC ids with a buffer
    companion:session:<id>          SessionRecord JSON (expires after a week unused)
    companion:world:<id>            list of pending game events
    companion:player-sessions:<tenant>/<player>   set of the player's session ids
    companion:rate:<tenant>:<minute>             counter (expires after two minutes)
A Redis that goes away raises `BackendUnavailableError` naming the URL and the fix.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from datetime import datetime

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from companion.buffer import BufferedTurn
from memory.events import utcnow
from server.errors import BackendUnavailableError
from server.sessions import MAX_PENDING_WORLD, SESSION_TTL_S, SessionRecord

PREFIX = "companion:"
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def connect(url: str) -> aioredis.Redis:
    """A client that survives a Redis restart: a pooled connection the server closed meanwhile fails
    its first command; that command is retried on a fresh connection (issue 16: the first request
    after Redis came back failed with "Connection closed by server.")."""
    return aioredis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


@asynccontextmanager
async def reachable(url: str):
    """Turns a lost connection into a BackendUnavailableError that says what to do."""
    try:
        yield
    except REDIS_DOWN as e:
        raise BackendUnavailableError(
            f"Redis at {describe(url)} is unreachable ({e}). Nothing was lost; start Redis "
            "(or fix REDIS_URL) and retry. GET /health shows when it is back."
        ) from e


class RedisBuffer:
    """The short-term buffer in Redis: survives a server restart, shared by all servers."""

    def __init__(self, client: aioredis.Redis, url: str, max_turns: int = 40):
        self.client, self.url, self.max_turns = client, url, max_turns

    async def append(self, turn: BufferedTurn, *, player_id: str, npc_id: str) -> None:
        key = _buffer_key(player_id, npc_id)
        async with reachable(self.url):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, turn.model_dump_json())
                pipe.ltrim(key, -self.max_turns, -1)
                pipe.sadd(f"{PREFIX}bufidx:{player_id}", npc_id)
                await pipe.execute()

    async def recent(self, *, player_id: str, npc_id: str, n: int) -> list[BufferedTurn]:
        if n <= 0:
            return []
        async with reachable(self.url):
            raw = await self.client.lrange(_buffer_key(player_id, npc_id), -n, -1)
        return [BufferedTurn.model_validate_json(item) for item in raw]

    async def clear(self, *, player_id: str, npc_id: str | None = None) -> None:
        index = f"{PREFIX}bufidx:{player_id}"
        async with reachable(self.url):
            npcs = [npc_id] if npc_id is not None else list(await self.client.smembers(index))
            if npcs:
                await self.client.delete(*(_buffer_key(player_id, n) for n in npcs))
                await self.client.srem(index, *npcs)


def _buffer_key(player_id: str, npc_id: str) -> str:
    return f"{PREFIX}buf:{player_id}|{npc_id}"


class RedisSessionStore:
    def __init__(self, client: aioredis.Redis, url: str):
        self.client, self.url = client, url

    async def get(self, session_id: str) -> SessionRecord | None:
        async with reachable(self.url):
            raw = await self.client.get(f"{PREFIX}session:{session_id}")
            if raw is not None:
                await self.client.expire(f"{PREFIX}session:{session_id}", SESSION_TTL_S)
        return SessionRecord.model_validate_json(raw) if raw else None

    async def put(self, record: SessionRecord) -> None:
        async with reachable(self.url):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(f"{PREFIX}session:{record.session_id}", record.model_dump_json(), ex=SESSION_TTL_S)
                pipe.sadd(f"{PREFIX}player-sessions:{record.tenant}/{record.player_id}", record.session_id)
                await pipe.execute()

    async def push_world(self, session_id: str, text: str) -> None:
        key = f"{PREFIX}world:{session_id}"
        async with reachable(self.url):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, text)
                pipe.ltrim(key, -MAX_PENDING_WORLD, -1)
                pipe.expire(key, SESSION_TTL_S)
                await pipe.execute()

    async def take_world(self, session_id: str) -> list[str]:
        key = f"{PREFIX}world:{session_id}"
        async with reachable(self.url):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                items, _ = await pipe.execute()
        return list(items)

    async def delete_player(self, *, tenant: str, player_id: str) -> int:
        index = f"{PREFIX}player-sessions:{tenant}/{player_id}"
        async with reachable(self.url):
            ids = list(await self.client.smembers(index))
            keys = [f"{PREFIX}session:{s}" for s in ids] + [f"{PREFIX}world:{s}" for s in ids]
            await self.client.delete(index, *keys)
        return len(ids)


class RedisRateLimiter:
    """Fixed one-minute windows counted in Redis, so every server shares a key's budget."""

    def __init__(self, client: aioredis.Redis, url: str, per_minute: int, clock=time.time):
        self.client, self.url, self.per_minute, self.clock = client, url, per_minute, clock

    async def hit(self, tenant: str) -> float | None:
        now = self.clock()
        key = f"{PREFIX}rate:{tenant}:{int(now // 60)}"
        async with reachable(self.url):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 120)
                count, _ = await pipe.execute()
        return None if count <= self.per_minute else 60 - (now % 60)


ERASURE_TTL_S = 7 * 24 * 3600  # longer than any turn can stay in flight or in the writer's queue


class RedisErasureLog:
    """The erasure log (companion.erasure) in Redis: a hard delete on any process wins on all."""

    def __init__(self, client: aioredis.Redis, url: str):
        self.client, self.url = client, url

    @staticmethod
    def _key(player_id: str, npc_id: str | None) -> str:
        return f"{PREFIX}erased:{player_id}\x00{npc_id or '*'}"

    async def record(self, *, player_id: str, npc_id: str | None = None) -> datetime:
        at = utcnow()
        async with reachable(self.url):
            await self.client.set(self._key(player_id, npc_id), at.isoformat(), ex=ERASURE_TTL_S)
        return at

    async def erased_after(self, *, player_id: str, npc_id: str, since: datetime) -> bool:
        async with reachable(self.url):
            values = await self.client.mget(self._key(player_id, None), self._key(player_id, npc_id))
        return any(v is not None and datetime.fromisoformat(v) >= since for v in values)
