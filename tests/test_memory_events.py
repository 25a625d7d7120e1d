"""The memory event schema (DESIGN §3)."""

from datetime import timedelta

import pytest
from pydantic import ValidationError

from memory.events import EVENT_TYPES, EventDraft, MemoryEvent, Turn, utcnow


def test_the_eight_types():
    assert EVENT_TYPES == (
        "personal_info", "preference", "health", "relationship", "plan", "life_event", "emotion", "shared_history",
    )  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "gossip", "content": "The player gossips.", "importance": 5},
        {"type": "health", "content": "The player is ill.", "importance": 11},
        {"type": "health", "content": "The player is ill.", "importance": 0},
        {"type": "health", "content": "  ", "importance": 5},
        {"type": "health", "content": "The player is ill.", "importance": 5, "mood": "sad"},
    ],
)
def test_invalid_drafts_are_rejected(bad):
    with pytest.raises(ValidationError):
        EventDraft(**bad)


def test_event_from_draft_takes_times_and_turn_ids_from_the_turns():
    at = utcnow() - timedelta(days=3)
    turns = [Turn(id="t1", role="player", text="I have asthma.", at=at, game_time="Day 12, dusk")]
    draft = EventDraft(type="health", content="The player has   asthma.", importance=8)
    event = MemoryEvent.from_draft(draft, player_id="p1", npc_id="mira", turns=turns)
    assert event.content == "The player has asthma."
    assert event.source_turn_ids == ["t1"] and event.created_at == at == event.updated_at
    assert event.game_time == "Day 12, dusk"
    assert event.active and event.mention_count == 1


def test_event_invariants():
    now = utcnow()
    with pytest.raises(ValidationError, match="updated_at is before created_at"):
        MemoryEvent(
            type="plan", content="The player plans a trip.", importance=5, player_id="p", npc_id="n",
            created_at=now, updated_at=now - timedelta(seconds=1),
        )  # fmt: skip
    with pytest.raises(ValidationError, match="supersede itself"):
        MemoryEvent(
            id="e1", type="plan", content="The player plans a trip.", importance=5, player_id="p", npc_id="n",
            superseded_by="e1",
        )  # fmt: skip


def test_a_turn_time_without_a_zone_is_read_as_utc():
    """A naive time (a game's clock, a dataset's dates) broke recency scoring at search time."""
    from datetime import UTC, datetime

    from memory.events import Turn

    turn = Turn(role="player", text="hi", at=datetime(2023, 5, 8, 13, 56))
    assert turn.at == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
