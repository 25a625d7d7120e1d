"""Relative dates resolved against the turn that said them (issue 13: "tomorrow" stored without a date)."""

from datetime import UTC, datetime

import pytest

from memory.dates import resolve_relative_dates

MONDAY = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        ("Tomorrow I'm flying out to see my dad.", "Tomorrow (9 May 2023) I'm flying out to see my dad."),
        ("I went to a support group yesterday.", "I went to a support group yesterday (7 May 2023)."),
        ("We moved here two years ago.", "We moved here two years ago (2021)."),
        ("I start a new job next month.", "I start a new job next month (June 2023)."),
        ("I ran a race last Saturday.", "I ran a race last Saturday (6 May 2023)."),
        ("I ran a race last Monday.", "I ran a race last Monday (1 May 2023)."),
        ("I was sick last week.", "I was sick last week (the week of 1 May 2023)."),
        ("We go camping this weekend.", "We go camping this weekend (13 May 2023)."),
        ("In 3 days I turn 30.", "In 3 days (11 May 2023) I turn 30."),
        ("My exam is in December, next year.", "My exam is in December, next year (2024)."),
        # "on Friday" by the tense: the coming one, or the one gone by
        ("See you on Friday.", "See you on Friday (12 May 2023)."),
        ("I sold my bike on Friday.", "I sold my bike on Friday (5 May 2023)."),
        ("The surgery is booked on Monday.", "The surgery is booked on Monday (15 May 2023)."),
        ("I burnt my hand this morning.", "I burnt my hand this morning (8 May 2023)."),
        ("Last night I couldn't sleep.", "Last night (7 May 2023) I couldn't sleep."),
    ],
)
def test_relative_dates_get_the_date_they_mean(said, stored):
    assert resolve_relative_dates(said, MONDAY) == stored


@pytest.mark.parametrize(
    "said",
    [
        "I have a test next Friday.",
        "We go camping next weekend.",
        "Back in the day I sang.",
    ],
)
def test_phrases_speakers_use_for_different_days_are_left_alone(said):
    assert resolve_relative_dates(said, MONDAY) == said


def test_a_resolved_phrase_is_not_resolved_twice():
    once = resolve_relative_dates("I left yesterday.", MONDAY)
    assert resolve_relative_dates(once, datetime(2023, 6, 1, tzinfo=UTC)) == once


def test_the_fast_summarizer_stores_the_date_a_relative_phrase_meant(minilm):
    from memory.events import Turn
    from memory.fast_summarizer import FastSummarizer

    turn = Turn(role="player", text="I have a job interview tomorrow and I'm so nervous.", at=MONDAY)
    contents = [d.content for d in FastSummarizer(minilm).summarize_sync([turn])]
    assert any("tomorrow (9 May 2023)" in c for c in contents), contents
