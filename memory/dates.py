"""Relative dates made absolute: "tomorrow" said on 8 May 2023 is stored as "tomorrow (9 May 2023)".

A fact is read days or months after it was told; "I'm flying out tomorrow" is wrong a week
later unless the day it meant travels with it. The phrase stays (it keeps the player's
voice and tense) and the date it resolves to follows in brackets, against the time of the
turn that said it. Resolved: yesterday, today, tonight, tomorrow, this morning (afternoon,
evening), last night, N days/weeks/months/years ago, in N days/weeks/..., last/next/this week,
weekend, month, year, "last Friday" (the latest Friday before the day it was said), and "on
Friday" / "this Friday" by the sentence's tense: the next Friday after the day it was said, or
the last one before it when the sentence is in the past tense ("I sold my bike on Tuesday").
"Next Friday" and "next weekend" are left alone: speakers mean different days by them.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "ten": 10,
}
_NUMBER = r"\d+|" + "|".join(_NUMBERS)
_UNIT = r"day|week|month|year"
_PHRASE = re.compile(
    r"\b(?:(?P<day>the day after tomorrow|the day before yesterday|yesterday|today|tonight|tomorrow"
    r"|this morning|this afternoon|this evening|last night)"
    rf"|(?P<on>on|this) (?P<weekday>{'|'.join(WEEKDAYS)})"
    rf"|(?P<ago_n>{_NUMBER}) (?P<ago_unit>{_UNIT})s? ago"
    rf"|in (?P<in_n>{_NUMBER}) (?P<in_unit>{_UNIT})s?"
    rf"|(?P<which>last|next|this) (?P<span>weekend|{_UNIT}|{'|'.join(WEEKDAYS)}))\b(?! \()",
    re.IGNORECASE,
)
# ...unless the sentence looks ahead ("is scheduled for", "will", "'m seeing")
_FUTURE = re.compile(
    r"\b(?:will|going to|gonna|scheduled|booked|planned|due|is \w+ing|are \w+ing|am \w+ing)\b|'ll\b|'m \w+ing\b",
    re.IGNORECASE,
)
_DAY_OFFSETS = {
    "yesterday": -1, "today": 0, "tonight": 0, "tomorrow": 1,
    "the day after tomorrow": 2, "the day before yesterday": -2,
    "this morning": 0, "this afternoon": 0, "this evening": 0, "last night": -1,
}  # fmt: skip
# a verb in the past tense: the weekday it names has gone by
_PAST = re.compile(
    r"\b(?:was|were|did|had|got|went|\w{2,}(?<!e)ed|lost|sold|bought|broke|ran|won|met|left|fell|found|took|came|saw|"
    r"made|gave|told|sent|paid|spent|wrote|drove|flew|ate|hurt)\b",
    re.IGNORECASE,
)


def resolve_relative_dates(text: str, said_at: datetime) -> str:
    """`text` with each relative date phrase followed by the date it means, e.g. "(9 May 2023)"."""
    today = said_at.date()

    past = bool(_PAST.search(text)) and not _FUTURE.search(text)

    def replace(match: re.Match) -> str:
        shown = _resolve(match, today, past)
        return f"{match.group(0)} ({shown})" if shown else match.group(0)

    return _PHRASE.sub(replace, text)


def _resolve(match: re.Match, today: date, past: bool) -> str | None:
    if match.group("weekday"):
        target = WEEKDAYS.index(match.group("weekday").lower())
        if past:
            return _day(today - timedelta(days=(today.weekday() - target) % 7 or 7))
        return _day(today + timedelta(days=(target - today.weekday()) % 7 or 7))
    if match.group("day"):
        return _day(today + timedelta(days=_DAY_OFFSETS[match.group("day").lower()]))
    for kind, sign in (("ago", -1), ("in", 1)):
        if match.group(f"{kind}_n"):
            number = match.group(f"{kind}_n").lower()
            n = int(number) if number.isdigit() else _NUMBERS[number]
            return _shifted(today, match.group(f"{kind}_unit").lower(), sign * n)
    return _relative(today, match.group("which").lower(), match.group("span").lower())


def _relative(today: date, which: str, span: str) -> str | None:
    if span in WEEKDAYS or (span == "weekend" and which == "next"):
        if which != "last":
            return None  # "next Friday", "next weekend": this week's or the one after? speakers differ
        back = (today.weekday() - WEEKDAYS.index(span)) % 7 or 7
        return _day(today - timedelta(days=back))
    step = {"last": -1, "next": 1, "this": 0}[which]
    if span in ("week", "weekend"):
        monday = today - timedelta(days=today.weekday()) + timedelta(weeks=step)
        return f"the week of {_day(monday)}" if span == "week" else _day(monday + timedelta(days=5))
    return _shifted(today, span, step)


def _shifted(today: date, unit: str, n: int) -> str:
    if unit == "day":
        return _day(today + timedelta(days=n))
    if unit == "week":
        return f"around {_day(today + timedelta(weeks=n))}"
    if unit == "month":
        month_index = today.year * 12 + today.month - 1 + n
        return date(month_index // 12, month_index % 12 + 1, 1).strftime("%B %Y")
    return str(today.year + n)


def _day(d: date) -> str:
    return f"{d.day} {d.strftime('%B %Y')}"
