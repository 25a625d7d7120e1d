"""Proactive recall: which remembered facts are worth bringing up now, if any.

value = the better of two readings, x novelty: the recall scorer's P(worth bringing up | memory,
line), and the search's relevance x a weight by type (health, plans, feelings and people matter
more than trivia), rescaled so that both readings share one bar (the relevance reading's bar is
lower where the scorer does not rule the pair out: `combined_scores`). A memory brought up in the
last few turns is not brought up again, so the NPC does not nag. When the player asks what the
character remembers, the best memory is brought up even under the bar: never nothing when facts
exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from companion.reflection.decision import RecallChoice
from memory.events import ScoredEvent

TYPE_WEIGHT = {
    "health": 1.0,
    "plan": 0.95,
    "emotion": 0.9,
    "relationship": 0.85,
    "life_event": 0.85,
    "shared_history": 0.85,
    "preference": 0.75,
    "personal_info": 0.7,
}

ASKS_TO_REMEMBER = re.compile(
    r"\b(do you remember|remember (when|what|where|that|my)|do you recall|did i (ever )?(tell|mention)|"
    r"what did i (say|tell)|do you know (my|where i|what i|who i))\b",
    re.IGNORECASE,
)
# What may explain why a player is upset. Not health: "I feel so alone" recalling a
# sensitive stomach reads as not listening.
SUPPORT_TYPES = frozenset({"life_event", "emotion", "plan", "relationship"})


def novelty(turns_since_mentioned: int | None, cooldown_turns: int) -> float:
    """1 for a memory not mentioned recently; 0 within the cooldown."""
    if turns_since_mentioned is None or turns_since_mentioned >= cooldown_turns:
        return 1.0
    return 0.0


def combined_scores(
    recalled: Sequence[ScoredEvent],
    scores: Sequence[float],
    threshold: float,
    *,
    relevance_bar: float,
    scorer_backed_bar: float,
    scorer_floor: float,
) -> list[float]:
    """max(scorer, relevance x type weight rescaled so that its bar maps onto `threshold`).

    The bar is `relevance_bar`, or the lower `scorer_backed_bar` where the scorer gives the pair
    at least `scorer_floor`: a memory close to the line in words is brought up, and one only
    loosely close to it when the scorer does not rule the pair out (a plain question beside a
    stored fact that shares a few words with it). The values live in `ReflectionConfig`.
    """
    values = []
    for hit, score in zip(recalled, scores, strict=True):
        bar = scorer_backed_bar if score >= scorer_floor else relevance_bar
        relevance = hit.parts.relevance * TYPE_WEIGHT.get(str(hit.event.type), 0.5)
        values.append(max(score, min(1.0, relevance / bar * threshold)))
    return values


def choose_recall(
    recalled: Sequence[ScoredEvent],
    scores: Sequence[float],
    recent_mentions: Mapping[str, int],
    *,
    threshold: float = 0.5,
    second_threshold: float = 0.7,
    cooldown_turns: int = 6,
    supporting: bool = False,
    asked_to_remember: bool = False,
) -> list[RecallChoice]:
    """At most two memories to bring up, best first.

    Args:
        recalled: what memory search returned for this line.
        scores: each of `recalled`'s value before novelty (`combined_scores`).
        recent_mentions: event id -> turns since the NPC last brought it up.
        threshold: the least value worth mentioning.
        second_threshold: a second memory must clear this higher bar (and be of another type).
        cooldown_turns: turns before a mentioned memory may come back.
        supporting: the player is upset; what may explain it (a loss, a worry, a plan, a
            person) is worth asking about at a lower bar (x0.7).
        asked_to_remember: the player asks what the character remembers: the best fresh
            memory is brought up whatever its value.
    """
    scored = _with_novelty(recalled, scores, recent_mentions, cooldown_turns)

    def bar(hit: ScoredEvent, first: bool) -> float:
        if first and asked_to_remember:
            return 0.0
        value = threshold if first else second_threshold
        return value * 0.7 if supporting and str(hit.event.type) in SUPPORT_TYPES else value

    # First: of the memories that clear the bar, the kind that matters most when it comes back
    # up (a sensitive stomach before a taste for spicy food), then the best scored.
    eligible = [item for item in scored if item[1] and item[0] >= bar(item[2], True)]
    eligible.sort(key=lambda item: (TYPE_WEIGHT.get(str(item[2].event.type), 0.5), item[0]), reverse=True)
    if not eligible:
        return []

    chosen = [_choice(eligible[0])]
    second = next(
        (
            item
            for item in scored
            if item[1] and str(item[2].event.type) != chosen[0].type and item[0] >= bar(item[2], False)
        ),
        None,
    )
    if second is not None:
        chosen.append(_choice(second))
    return chosen


def _with_novelty(recalled, scores, recent_mentions, cooldown_turns: int) -> list[tuple]:
    """(value x novelty, novelty, hit, reason) for each memory, best first."""
    scored = []
    for hit, score in zip(recalled, scores, strict=True):
        event = hit.event
        fresh = novelty(recent_mentions.get(event.id), cooldown_turns)
        reason = f"{event.type} memory, scored {score:.2f}" + (
            "" if fresh else f", mentioned {recent_mentions[event.id]} turns ago"
        )
        scored.append((score * fresh, fresh, hit, reason))
    return sorted(scored, key=lambda item: item[0], reverse=True)


def _choice(item: tuple) -> RecallChoice:
    value, _, hit, reason = item
    return RecallChoice(
        event_id=hit.event.id, type=str(hit.event.type), content=hit.event.content, value=value, reason=reason
    )
