"""The small protocols where `memory` meets the rest of the system.

Related methods take the same keywords: every store method is scoped by
`player_id` (and `npc_id` where it narrows further).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from memory.consolidation import MemoryWrite
from memory.events import EventDraft, MemoryEvent, ScoredEvent, Turn


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings.

    `embed` returns one unit-length vector per text, so the dot product of two vectors is
    their cosine similarity, in [-1, 1], higher is closer.
    """

    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


@runtime_checkable
class TextGenerator(Protocol):
    """A chat language model, as the generative summarizer needs it.

    `complete` returns the assistant's reply to `messages` ({"role", "content"} dicts),
    with the named LoRA adapter active (None: the bare model).
    """

    async def complete(
        self, messages: Sequence[Mapping[str, str]], *, adapter: str | None = None, max_new_tokens: int = 256
    ) -> str: ...


@runtime_checkable
class Summarizer(Protocol):
    """New turns of one player-NPC conversation in, memory event drafts out.

    Chit-chat (greetings, thanks) gives an empty list.
    """

    async def summarize(self, turns: Sequence[Turn], *, npc_name: str | None = None) -> list[EventDraft]: ...


@runtime_checkable
class MemoryStore(Protocol):
    """Where events live. A call for one player can never see another player's events."""

    async def add(
        self, drafts: Sequence[EventDraft], *, player_id: str, npc_id: str, turns: Sequence[Turn] = ()
    ) -> list[MemoryWrite]: ...

    async def retract(self, writes: Sequence[MemoryWrite], *, player_id: str, npc_id: str) -> int: ...

    async def search(
        self,
        query: str,
        *,
        player_id: str,
        npc_id: str,
        k: int = 5,
        include_superseded: bool = False,
        now: datetime | None = None,
    ) -> list[ScoredEvent]: ...

    async def list(
        self, *, player_id: str, npc_id: str | None = None, include_superseded: bool = True
    ) -> list[MemoryEvent]: ...

    async def related(
        self, texts: Sequence[str], *, player_id: str, npc_id: str, k: int = 4
    ) -> list[MemoryEvent]:
        """The events nearest to any of `texts`, superseded ones too, and the events that replaced
        them: what the post-check compares a draft with."""
        ...

    async def delete(self, *, player_id: str, npc_id: str | None = None) -> int: ...

    async def export(self, *, player_id: str, npc_id: str | None = None) -> dict[str, Any]: ...

    def heartbeat(self) -> None:
        """Returns when the store answers; raises when it cannot (blocking: call it in a thread)."""
        ...
