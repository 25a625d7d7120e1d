"""The bundled personas, for callers that need no user folders."""

from __future__ import annotations

from persona_adapters.persona import Persona
from persona_adapters.registry import BUNDLED_DIR, PersonaRegistry

_BUNDLED = PersonaRegistry([BUNDLED_DIR])
BUILTIN_PERSONAS: dict[str, Persona] = {p.id: p for p in _BUNDLED.all()}


def get_persona(persona_id: str) -> Persona:
    """The bundled persona with this id.

    Raises:
        UnknownPersonaError: no bundled persona has this id; the message lists those that exist.
    """
    return _BUNDLED.get(persona_id)
