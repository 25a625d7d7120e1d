"""The short-term buffer: the last turns of one player-NPC conversation.

`InProcessBuffer` keeps them in memory; the server adds a Redis implementation of the
same protocol.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from memory.events import Turn


class BufferedTurn(BaseModel):
    """A turn in the buffer, with what the NPC's reply used (for recall cooldowns)."""

    model_config = ConfigDict(frozen=True)

    turn: Turn
    memories_used: list[str] = Field(default_factory=list)


class ShortTermBuffer(Protocol):
    """The recent turns of each player-NPC conversation, oldest first."""

    async def append(self, turn: BufferedTurn, *, player_id: str, npc_id: str) -> None: ...

    async def recent(self, *, player_id: str, npc_id: str, n: int) -> list[BufferedTurn]: ...

    async def clear(self, *, player_id: str, npc_id: str | None = None) -> None: ...


class InProcessBuffer:
    """Keeps the last `max_turns` turns of every conversation in this process."""

    def __init__(self, max_turns: int = 40):
        self.max_turns = max_turns
        self._turns: dict[tuple[str, str], deque[BufferedTurn]] = defaultdict(lambda: deque(maxlen=max_turns))

    async def append(self, turn: BufferedTurn, *, player_id: str, npc_id: str) -> None:
        self._turns[(player_id, npc_id)].append(turn)

    async def recent(self, *, player_id: str, npc_id: str, n: int) -> list[BufferedTurn]:
        turns = self._turns.get((player_id, npc_id), ())
        return list(turns)[-n:] if n > 0 else []

    async def clear(self, *, player_id: str, npc_id: str | None = None) -> None:
        for key in [k for k in self._turns if k[0] == player_id and (npc_id is None or k[1] == npc_id)]:
            del self._turns[key]


def turns_since_mentioned(history: Sequence[BufferedTurn]) -> dict[str, int]:
    """event id -> how many turns ago the NPC last used it (0 = the latest turn)."""
    mentions: dict[str, int] = {}
    for age, buffered in enumerate(reversed(history)):
        for event_id in buffered.memories_used:
            mentions.setdefault(event_id, age)
    return mentions
