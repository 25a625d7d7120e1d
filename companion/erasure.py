"""Hard deletes that win over writes already in flight.

A hard delete can land while a reply to that player is still streaming, or while its turn
waits in the memory writer's queue; without a record of it, that turn would be remembered
after the delete returned. The erasure log keeps, per player (and NPC), when the last hard
delete happened; the pipeline and the memory writers drop any turn that began before it.
The server keeps the log in Redis when it has one, so every process sees a delete made on
any of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from memory.events import utcnow


class ErasureLog(Protocol):
    """When each player's memories (with one NPC, or all) were last hard-deleted."""

    async def record(self, *, player_id: str, npc_id: str | None = None) -> datetime:
        """Notes a hard delete now (npc_id None: with every NPC); returns its time."""
        ...

    async def erased_after(self, *, player_id: str, npc_id: str, since: datetime) -> bool:
        """True when the player's memories with this NPC were hard-deleted after `since`."""
        ...


class InProcessErasureLog:
    """The erasure log of a single process."""

    def __init__(self) -> None:
        self._at: dict[tuple[str, str | None], datetime] = {}

    async def record(self, *, player_id: str, npc_id: str | None = None) -> datetime:
        at = utcnow()
        self._at[(player_id, npc_id)] = at
        return at

    async def erased_after(self, *, player_id: str, npc_id: str, since: datetime) -> bool:
        times = [self._at.get((player_id, None)), self._at.get((player_id, npc_id))]
        return any(t is not None and t >= since for t in times)
