"""The persona: who an NPC is, how it speaks, and what it knows. Pure data.

A persona is a YAML file (see persona_adapters/personas/ for examples) whose keys are
this class's fields; `load_persona(path)` validates it with errors that name the file,
the field and the fix.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from persona_adapters.errors import InvalidPersonaError

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ROLES = ("player", "npc")


@dataclass(frozen=True)
class DialogueLine:
    """One line of an example dialogue: who speaks ("player" or "npc") and what."""

    role: str
    text: str


@dataclass(frozen=True)
class LoreEntry:
    """A world fact added to the prompt when the player's line contains one of its keys."""

    keys: tuple[str, ...]
    content: str

    def triggered_by(self, text: str) -> bool:
        lowered = text.lower()
        return any(re.search(rf"\b{re.escape(k.lower())}\b", lowered) for k in self.keys)


@dataclass(frozen=True)
class Persona:
    """One character.

    Attributes:
        id: lowercase slug used by protocols and file names ("mira").
        name: display name ("Mira").
        description: who the character is, in the third person.
        personality: traits that shape replies.
        speaking_style: how the character talks.
        scenario: where and when the conversation happens.
        first_message: the character's opening line.
        example_dialogues: short exchanges in the character's voice (training data for
            its adapter, and style examples).
        knowledge_domain: what the character knows about.
        must_refuse: things outside the character's world, refused in character; list
            concrete items ("smartphones", "cars") rather than categories ("modern technology").
        boundaries: what the character will not do or say, whatever the player asks.
        lorebook: keyword-triggered world facts.
        system_prompt: extra instructions (Character Cards carry one).
        adapter_path: the character's LoRA adapter directory, relative to the persona file.
        card_extras: Character Card fields Companion does not use (creator, tags, notes,
            alternate greetings...), kept so that an imported card exports unchanged.
    """

    id: str
    name: str
    description: str
    personality: str = ""
    speaking_style: str = ""
    scenario: str = ""
    first_message: str = ""
    example_dialogues: tuple[tuple[DialogueLine, ...], ...] = ()
    knowledge_domain: str = ""
    must_refuse: tuple[str, ...] = field(default_factory=tuple)
    boundaries: tuple[str, ...] = ()
    lorebook: tuple[LoreEntry, ...] = ()
    system_prompt: str = ""
    adapter_path: str | None = None
    card_extras: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        if not _ID.match(self.id or ""):
            raise InvalidPersonaError(
                f"field 'id': {self.id!r} is invalid; use 1-64 lowercase letters, digits, '-' or '_' "
                "starting with a letter or digit (e.g. 'mira')."
            )
        if not self.name.strip():
            raise InvalidPersonaError(f"persona {self.id!r}, field 'name': empty; give the character a name.")
        if not self.description.strip():
            raise InvalidPersonaError(
                f"persona {self.id!r}, field 'description': empty; describe who they are."
            )

    def lore_for(self, text: str) -> list[str]:
        """World facts whose keys the text mentions."""
        return [entry.content for entry in self.lorebook if entry.triggered_by(text)]

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: plain lists and dicts, empty optional fields left out."""
        data = dataclasses.asdict(self)
        data["example_dialogues"] = [
            [{line["role"]: line["text"]} for line in d] for d in data["example_dialogues"]
        ]
        data["lorebook"] = [{"keys": list(e["keys"]), "content": e["content"]} for e in data["lorebook"]]
        data["must_refuse"], data["boundaries"] = list(self.must_refuse), list(self.boundaries)
        return {k: v for k, v in data.items() if v not in ("", None, [], (), {})}


_STR_FIELDS = ("id", "name", "description", "personality", "speaking_style", "scenario", "first_message",
               "knowledge_domain", "system_prompt", "adapter_path")  # fmt: skip
_LIST_FIELDS = ("must_refuse", "boundaries")


def persona_from_dict(data: Any, *, source: str = "persona") -> Persona:
    """Validates a mapping (parsed YAML, or an imported card) into a Persona.

    Raises:
        InvalidPersonaError: naming `source`, the field, what is wrong and how to fix it.
    """

    def fail(field_name: str, problem: str, fix: str) -> InvalidPersonaError:
        return InvalidPersonaError(f"{source}: field '{field_name}': {problem}; {fix}")

    if not isinstance(data, dict):
        raise InvalidPersonaError(
            f"{source}: expected a mapping of persona fields, got {type(data).__name__}."
        )
    known = {f.name for f in dataclasses.fields(Persona)}
    for key in data:
        if key not in known:
            raise fail(key, "unknown field", f"use only {', '.join(sorted(known))}")
    for key in ("id", "name", "description"):
        if not data.get(key):
            raise fail(key, "missing or empty", "every persona needs an id, a name and a description")
    for key in _STR_FIELDS:
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise fail(key, f"expected text, got {type(data[key]).__name__}", "write it as a string")
    lists = {}
    for key in _LIST_FIELDS:
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise fail(key, "expected a list of non-empty strings", f'write {key}: ["...", "..."]')
        lists[key] = tuple(value)
    dialogues = []
    for i, dialogue in enumerate(data.get("example_dialogues") or []):
        if not isinstance(dialogue, list) or not dialogue:
            raise fail(
                f"example_dialogues[{i}]",
                "expected a non-empty list of lines",
                "write - {player: ...} / - {npc: ...}",
            )
        lines = []
        for j, line in enumerate(dialogue):
            if not (
                isinstance(line, dict)
                and len(line) == 1
                and next(iter(line)) in ROLES
                and isinstance(next(iter(line.values())), str)
            ):
                raise fail(
                    f"example_dialogues[{i}][{j}]",
                    f"{line!r} is not one line",
                    "write {player: text} or {npc: text}",
                )
            role, text = next(iter(line.items()))
            lines.append(DialogueLine(role=role, text=text))
        dialogues.append(tuple(lines))
    lore = []
    for i, entry in enumerate(data.get("lorebook") or []):
        keys = entry.get("keys") if isinstance(entry, dict) else None
        if (
            not keys
            or not isinstance(keys, list)
            or not isinstance(entry.get("content"), str)
            or not entry["content"].strip()
        ):
            raise fail(
                f"lorebook[{i}]",
                "needs keys (a list of words) and content (text)",
                "write {keys: [dragon], content: ...}",
            )
        lore.append(LoreEntry(keys=tuple(str(k) for k in keys), content=entry["content"]))
    values = {k: data[k] for k in _STR_FIELDS if data.get(k) is not None}
    extras = data.get("card_extras") or {}
    if not isinstance(extras, dict):
        raise fail("card_extras", "expected a mapping", "leave it as the import wrote it, or remove it")
    try:
        return Persona(
            **values, **lists, example_dialogues=tuple(dialogues), lorebook=tuple(lore), card_extras=extras
        )
    except InvalidPersonaError as e:
        raise InvalidPersonaError(f"{source}: {e}") from None


def load_persona(path: str | Path) -> Persona:
    """Reads and validates a persona YAML file."""
    from persona_adapters.files import decode_text, read_input

    path = Path(path)
    raw = read_input(path, what="persona YAML", error=InvalidPersonaError)
    text = decode_text(raw, path, what="persona YAML", error=InvalidPersonaError)
    try:
        data = yaml.safe_load(text)
    except RecursionError as e:
        raise InvalidPersonaError(f"{path}: the YAML is nested too deeply to read.") from e
    except yaml.YAMLError as e:
        raise InvalidPersonaError(f"{path}: not valid YAML ({e}); check indentation and quotes.") from e
    return persona_from_dict(data, source=str(path))


def save_persona(persona: Persona, path: str | Path) -> Path:
    """Writes the persona as YAML; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(persona.to_dict(), sort_keys=False, allow_unicode=True, width=100), encoding="utf-8"
    )
    return path
