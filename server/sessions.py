"""Sessions: which player talks to which NPC under which key, and game events not yet answered.

A session outlives its socket: a client that reconnects with the session id resumes the
conversation (the turns themselves live in the short-term buffer). `InProcessSessionStore`
keeps sessions in this process; `RedisSessionStore` keeps them in Redis, so they survive
a server restart and are shared by every server on that Redis.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

SESSION_TTL_S = 7 * 24 * 3600
MAX_PENDING_WORLD = 20  # game events kept for the next reply; older ones are dropped first


def new_session_id() -> str:
    return "s_" + secrets.token_urlsafe(16)


class SessionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str = Field(default_factory=new_session_id)
    tenant: str
    player_id: str
    npc_id: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class SessionStore(Protocol):
    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def put(self, record: SessionRecord) -> None: ...

    async def push_world(self, session_id: str, text: str) -> None:
        """Keeps a game event until the next reply takes it."""

    async def take_world(self, session_id: str) -> list[str]:
        """The pending game events, oldest first; they are removed."""

    async def delete_player(self, *, tenant: str, player_id: str) -> int:
        """Forgets the player's sessions (part of a hard delete); returns how many."""


class InProcessSessionStore:
    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._world: dict[str, list[str]] = {}

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    async def put(self, record: SessionRecord) -> None:
        self._records[record.session_id] = record

    async def push_world(self, session_id: str, text: str) -> None:
        pending = self._world.setdefault(session_id, [])
        pending.append(text)
        del pending[:-MAX_PENDING_WORLD]

    async def take_world(self, session_id: str) -> list[str]:
        return self._world.pop(session_id, [])

    async def delete_player(self, *, tenant: str, player_id: str) -> int:
        gone = [s for s, r in self._records.items() if r.tenant == tenant and r.player_id == player_id]
        for session_id in gone:
            self._records.pop(session_id, None)
            self._world.pop(session_id, None)
        return len(gone)
