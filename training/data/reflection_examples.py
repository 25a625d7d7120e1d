"""The reflection gates' data, read from `reflection_bank.yaml` and split by topic.

Every list in the bank is split the same way: the items at odd positions of their group (fact
kinds within a fact group, distress lines within a kind of trouble, in-world questions of a
setting, injections, memory questions) are held out, and whole request categories marked
`heldout` are. Training and every threshold use the "train" split only; the "heldout" split
measures what the gates do on fact kinds, phrasings and request categories they never saw.
Model choices are made inside "train": "fit" (positions 0, 4, 8...) trains, "dev" (positions 2,
6, 10..., and the request categories marked `dev`) judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml

BANK_FILE = Path(__file__).parent / "reflection_bank.yaml"
Split = Literal["train", "heldout", "fit", "dev"]


@dataclass(frozen=True)
class FactKind:
    """A fact a player tells, and lines said later that should bring it up."""

    id: str
    group: str
    fact: str
    triggers: tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    """Where a persona lives: a bundled persona's id, or a description written here."""

    id: str
    era: int
    world: str
    persona: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Request:
    """An out-of-world request: the least era it needs, or the worlds it belongs to."""

    category: str
    text: str
    needs: int | None
    worlds: tuple[str, ...] | None

    def out_of_world(self, setting: Setting) -> bool:
        if self.worlds is not None:
            return setting.world not in self.worlds
        return setting.era < (self.needs or 0)


def heldout_position(index: int) -> bool:
    return index % 2 == 1


def in_split(index: int, split: Split) -> bool:
    if split in ("train", "heldout"):
        return heldout_position(index) == (split == "heldout")
    return index % 4 == (0 if split == "fit" else 2)


def _pick(items: list, split: Split) -> list:
    return [item for i, item in enumerate(items) if in_split(i, split)]


@cache
def bank() -> dict:
    return yaml.safe_load(BANK_FILE.read_text(encoding="utf-8"))


def fact_kinds(split: Split) -> list[FactKind]:
    return [
        FactKind(id=k["id"], group=group, fact=k["fact"], triggers=tuple(k["triggers"]))
        for group, kinds in bank()["fact_kinds"].items()
        for k in _pick(kinds, split)
    ]


def support_lines(split: Split) -> list[tuple[str, str]]:
    """(kind of trouble, line)."""
    return [(kind, line) for kind, lines in bank()["support"].items() for line in _pick(lines, split)]


def settings() -> list[Setting]:
    eras = bank()["eras"]
    return [
        Setting(
            id=s["id"], era=eras[s["era"]], world=s["world"], persona=s.get("persona"), text=s.get("text", "")
        )
        for s in bank()["settings"]
    ]


def requests(split: Split) -> list[Request]:
    """Out-of-world requests: whole held-out categories, and odd lines of the others, are held out."""
    eras = bank()["eras"]
    out = []
    for category, spec in bank()["requests"].items():
        if spec.get("heldout"):  # the whole category, in "heldout" only
            if split != "heldout":
                continue
            lines = spec["lines"]
        elif spec.get("dev") and split in ("fit", "dev"):  # the whole category, in "dev" only
            if split == "fit":
                continue
            lines = _pick(spec["lines"], "train")
        else:
            lines = _pick(spec["lines"], split)
        needs, worlds = spec.get("needs"), spec.get("world")
        for text in lines:
            out.append(
                Request(category, text, eras[needs] if needs else None, tuple(worlds) if worlds else None)
            )
    return out


def in_world(setting_id: str, split: Split) -> list[str]:
    """Questions a persona of this setting answers: small talk, then the setting's own."""
    lists = bank()["in_world"]
    return [*_pick(lists["all"], split), *_pick(lists.get(setting_id, []), split)]


def injections(split: Split) -> list[str]:
    return _pick(bank()["injections"], split)


def memory_questions(split: Split) -> list[str]:
    return _pick(bank()["memory_questions"], split)


def distress_triggers(split: Split) -> list[tuple[FactKind, str]]:
    """(fact kind, line): distress that also calls for the kind's fact."""
    kinds = {k.id: k for k in fact_kinds(split)}
    return [
        (kinds[kind_id], line)
        for kind_id, lines in bank().get("distress_triggers", {}).items()
        if kind_id in kinds
        for line in lines
    ]
