"""Labelled example lines from templates: the YAML files in this folder, filled from word lists.

A template file holds `slots` (word lists, or `{min, max}` for a number), `capitalized`
(slots that also exist as `{name_cap}`), `prefixes` (openers such as "Well, ") and
`templates` (label -> lines with `{slot}` fields). Every slot is drawn once per line, in
file order, so a seed gives the same set on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from companion.errors import ConfigError


@dataclass(frozen=True)
class TemplateSet:
    slots: dict[str, list[str] | dict[str, int]]
    capitalized: tuple[str, ...]
    prefixes: tuple[str, ...]
    templates: dict[str, list[str]]

    @classmethod
    def load(cls, path: Path) -> TemplateSet:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        missing = {"slots", "prefixes", "templates"} - set(data or {})
        if missing:
            raise ConfigError(f"template file {path} lacks {sorted(missing)}.")
        template_set = cls(
            slots=data["slots"],
            capitalized=tuple(data.get("capitalized", ())),
            prefixes=tuple(data["prefixes"]),
            templates=data["templates"],
        )
        template_set._check(path)
        return template_set

    def fill(self, template: str, rng: random.Random) -> str:
        values: dict[str, object] = {}
        for name, choices in self.slots.items():
            values[name] = (
                rng.randint(choices["min"], choices["max"])
                if isinstance(choices, dict)
                else rng.choice(choices)
            )
        for name in self.capitalized:
            text = str(values[name])
            values[f"{name}_cap"] = text[:1].upper() + text[1:]
        return template.format(**values)

    def build(self, n_per_label: int, seed: int) -> list[tuple[str, str]]:
        """(line, label) pairs, up to `n_per_label` distinct lines per label, shuffled."""
        rng = random.Random(seed)
        rows: list[tuple[str, str]] = []
        for label, templates in self.templates.items():
            seen: set[str] = set()
            for _ in range(n_per_label * 20):
                if len(seen) >= n_per_label:
                    break
                text = self.fill(rng.choice(templates), rng)
                prefix = rng.choice(self.prefixes)
                if prefix and not text.startswith(("I ", "I'")):
                    text = text[:1].lower() + text[1:]
                seen.add(prefix + text)
            rows += [(t, label) for t in sorted(seen)]
        rng.shuffle(rows)
        return rows

    def _check(self, path: Path) -> None:
        known = set(self.slots) | {f"{name}_cap" for name in self.capitalized}
        for label, templates in self.templates.items():
            for template in templates:
                for field in _fields(template):
                    if field not in known:
                        raise ConfigError(
                            f"{path}: template {template!r} ({label}) uses unknown slot {{{field}}}."
                        )


def _fields(template: str) -> list[str]:
    import string

    return [name for _, name, _, _ in string.Formatter().parse(template) if name]
