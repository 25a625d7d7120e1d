"""What reflection decides and finds, as typed records (they travel in reply metadata)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["answer", "support", "recall", "refuse"]
# refuse_topic of a line that tries to make the character leave its role or show its instructions
ROLE_BREAK = "stepping out of the role"
FlagKind = Literal[
    "breaks_character",
    "invented_memory",
    "contradicts_memory",
    "ignored_recall",
    "answered_out_of_domain",
    "too_long",
]


class RecallChoice(BaseModel):
    """A memory worth bringing up this turn, and why."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    type: str
    content: str
    value: float = Field(
        description="the better of the recall scorer's probability and rescaled search relevance, x novelty, in [0, 1]"
    )
    reason: str


class Decision(BaseModel):
    """Reflection before the reply.

    Attributes:
        strategy: "refuse" (outside the persona's world, or an attempt to break the role;
            refuse in character), "support" (the player is in distress; memories may be
            brought up too), "recall" (bring up a memory), or "answer" (reply plainly).
        emotion: the player's emotion (neutral, sadness, distress, anger, joy).
        tone: how the reply should sound.
        recall: at most two memories to bring up, best first.
        refuse_topic: the out-of-domain topic, for "refuse" (ROLE_BREAK for an attempt to
            break the role).
        asked_to_remember: the player asked what the character remembers about them.
        reasons: why, in words, one line per gate.
    """

    model_config = ConfigDict(frozen=True)

    strategy: Strategy
    emotion: str
    emotion_confidence: float
    tone: str
    recall: list[RecallChoice] = Field(default_factory=list)
    refuse_topic: str | None = None
    asked_to_remember: bool = False
    reasons: list[str] = Field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.strategy == "refuse"


class Flag(BaseModel):
    """One problem the post-check found in a draft."""

    model_config = ConfigDict(frozen=True)

    kind: FlagKind
    detail: str


class PostCheck(BaseModel):
    """Reflection after the reply: what is wrong with a draft, if anything."""

    model_config = ConfigDict(frozen=True)

    flags: list[Flag] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.flags
