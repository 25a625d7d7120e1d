"""Personas (data, not code) and the adapters that give each one its voice."""

from persona_adapters.builtin import BUILTIN_PERSONAS, get_persona
from persona_adapters.persona import Persona

__all__ = ["BUILTIN_PERSONAS", "Persona", "get_persona"]
