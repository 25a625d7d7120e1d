"""The memory event: one third-person fact about a player, typed, scored and linked.

DESIGN §3 lists the eight types. An event belongs to one player and one NPC (what the
player told that NPC); an update supersedes an older event without deleting it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class EventType(StrEnum):
    PERSONAL_INFO = "personal_info"
    PREFERENCE = "preference"
    HEALTH = "health"
    RELATIONSHIP = "relationship"
    PLAN = "plan"
    LIFE_EVENT = "life_event"
    EMOTION = "emotion"
    SHARED_HISTORY = "shared_history"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)

# Default importance (1-10) by type: what matters most when it comes back up.
DEFAULT_IMPORTANCE: dict[EventType, int] = {
    EventType.HEALTH: 8,
    EventType.LIFE_EVENT: 7,
    EventType.PLAN: 7,
    EventType.RELATIONSHIP: 6,
    EventType.EMOTION: 6,
    EventType.PERSONAL_INFO: 6,
    EventType.SHARED_HISTORY: 5,
    EventType.PREFERENCE: 5,
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return uuid.uuid4().hex


class Turn(BaseModel):
    """One line of a player-NPC conversation, as the summarizer sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_event_id, min_length=1, max_length=128)
    role: Literal["player", "npc"]
    text: str = Field(max_length=8000)
    at: datetime = Field(default_factory=utcnow)
    game_time: str | None = Field(default=None, max_length=64)

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        """A time without a zone is read as UTC (events compare times with the clock's, which has one)."""
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class EventDraft(BaseModel):
    """What a summarizer extracts: the fact, before it is tied to a player and stored."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    content: str = Field(min_length=3, max_length=500)
    importance: int = Field(ge=1, le=10)
    slot: str | None = Field(
        default=None,
        max_length=40,
        description="the attribute this fact sets (home, job, diet, ...); a new fact with the same slot "
        "supersedes the old one",
    )

    @field_validator("content")
    @classmethod
    def _one_sentence(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("content is empty")
        return value


SAID_MAX_CHARS = 2000


def said_in(turns: list[Turn], before: str = "") -> str:
    """The player's lines among `turns` after `before`, cut to SAID_MAX_CHARS (NPC lines are not
    the player's words)."""
    said = " ".join([before, *(t.text for t in turns if t.role == "player" and t.text not in before)])
    return " ".join(said.split())[:SAID_MAX_CHARS]


class MemoryEvent(EventDraft):
    """A stored memory event (DESIGN §3)."""

    id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    player_id: str = Field(min_length=1, max_length=128)
    npc_id: str = Field(min_length=1, max_length=128)
    source_turn_ids: list[str] = Field(default_factory=list)
    said: str = Field(
        default="",
        max_length=SAID_MAX_CHARS,
        description="the player's own words this fact came from; keyword search reads them beside "
        "the fact, so a word the rewrite dropped (a name, a title, the thing a pronoun meant) still "
        "finds it",
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    last_accessed_at: datetime | None = None
    game_time: str | None = Field(default=None, max_length=64)
    mention_count: int = Field(default=1, ge=1)
    supersedes: str | None = None
    superseded_by: str | None = None

    @model_validator(mode="after")
    def _times_in_order(self) -> MemoryEvent:
        if self.updated_at < self.created_at:
            raise ValueError("updated_at is before created_at")
        if self.superseded_by is not None and self.superseded_by == self.id:
            raise ValueError("an event cannot supersede itself")
        return self

    @property
    def active(self) -> bool:
        """False once a newer event has superseded this one."""
        return self.superseded_by is None

    @classmethod
    def from_draft(
        cls, draft: EventDraft, *, player_id: str, npc_id: str, turns: list[Turn] | None = None, **fields
    ) -> MemoryEvent:
        turns = turns or []
        at = max((t.at for t in turns), default=None) or utcnow()
        game_time = next((t.game_time for t in reversed(turns) if t.game_time), None)
        return cls(
            **draft.model_dump(),
            player_id=player_id,
            npc_id=npc_id,
            source_turn_ids=[t.id for t in turns],
            said=said_in(turns),
            created_at=at,
            updated_at=at,
            game_time=game_time,
            **fields,
        )


class ScoreParts(BaseModel):
    """The parts of a retrieval score, each in [0, 1]."""

    model_config = ConfigDict(frozen=True)

    relevance: float
    recency: float
    importance: float
    keyword: float = 0.0
    said: float = 0.0


class ScoredEvent(BaseModel):
    """A recalled event with its score (weighted sum of the parts; higher is better)."""

    model_config = ConfigDict(frozen=True)

    event: MemoryEvent
    score: float
    parts: ScoreParts
