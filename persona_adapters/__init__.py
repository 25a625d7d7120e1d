"""Personas (data, not code): YAML files, Character Card import/export, and where adapters live."""

from persona_adapters.builtin import BUILTIN_PERSONAS, get_persona
from persona_adapters.persona import (
    DialogueLine,
    LoreEntry,
    Persona,
    load_persona,
    persona_from_dict,
    save_persona,
)
from persona_adapters.registry import PersonaRegistry

__all__ = [
    "BUILTIN_PERSONAS",
    "DialogueLine",
    "LoreEntry",
    "Persona",
    "PersonaRegistry",
    "get_persona",
    "load_persona",
    "persona_from_dict",
    "save_persona",
]
