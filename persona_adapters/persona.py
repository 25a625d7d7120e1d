"""The persona: who an NPC is, how it speaks, and what it knows. Pure data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from persona_adapters.errors import InvalidPersonaError

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


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
        knowledge_domain: what the character knows about.
        must_refuse: things outside the character's world, refused in character; list concrete
            items ("smartphones", "cars") rather than categories ("modern technology").
        adapter_path: a LoRA adapter giving the character its voice, or None.
    """

    id: str
    name: str
    description: str
    personality: str = ""
    speaking_style: str = ""
    scenario: str = ""
    first_message: str = ""
    knowledge_domain: str = ""
    must_refuse: tuple[str, ...] = field(default_factory=tuple)
    adapter_path: str | None = None

    def __post_init__(self) -> None:
        if not _ID.match(self.id or ""):
            raise InvalidPersonaError(
                f"persona id {self.id!r} is invalid; use 1-64 lowercase letters, digits, '-' or '_' "
                "starting with a letter or digit (e.g. 'mira')."
            )
        if not self.name.strip():
            raise InvalidPersonaError(f"persona {self.id!r} has an empty name; give the character a name.")
        if not self.description.strip():
            raise InvalidPersonaError(f"persona {self.id!r} has an empty description; describe who they are.")
