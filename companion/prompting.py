"""Turns a persona and a conversation into chat messages for the backbone."""

from __future__ import annotations

from collections.abc import Sequence

from companion.backbone.hf_engine import Message
from persona_adapters import Persona


def persona_system_prompt(persona: Persona) -> str:
    """The system message that puts the backbone in character."""
    parts = [f"You are {persona.name}. {persona.description}"]
    if persona.personality:
        parts.append(f"Personality: {persona.personality}")
    if persona.speaking_style:
        parts.append(f"Speaking style: {persona.speaking_style}")
    if persona.scenario:
        parts.append(f"Scenario: {persona.scenario}")
    if persona.knowledge_domain:
        parts.append(f"You know about: {persona.knowledge_domain}")
    if persona.must_refuse:
        parts.append(f"You know nothing of {', '.join(persona.must_refuse)}; if asked, say so in character.")
    if persona.boundaries:
        parts.append("You never break these rules: " + " ".join(persona.boundaries))
    if persona.system_prompt:
        parts.append(persona.system_prompt)
    parts.append(
        f"Stay in character as {persona.name}. Never say you are an AI. Reply in one to three sentences."
    )
    return "\n".join(parts)


def build_messages(
    persona: Persona,
    history: Sequence[Message],
    user_text: str,
    *,
    guidance: str = "",
    world: Sequence[str] = (),
) -> list[dict[str, str]]:
    """System prompt (with this turn's guidance), then the conversation so far, then the player's line.

    Args:
        persona: who answers.
        history: earlier turns, oldest first, roles "user" / "assistant" (the persona's
            first message, when shown, is the first assistant turn).
        user_text: what the player just said.
        guidance: reflection's instructions for this turn (see companion.reflection.guidance).
        world: things that just happened in the game that the NPC saw, oldest first.
    """
    system = persona_system_prompt(persona)
    if lore := persona.lore_for(user_text):
        system += "\nWhat you know about this: " + " ".join(lore)
    if world:
        system += "\nJust now, you saw: " + " ".join(w.rstrip(".") + "." for w in world)
    if guidance:
        system += f"\n\nFor this reply:\n{guidance}"
    messages = [{"role": "system", "content": system}]
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    messages.append({"role": "user", "content": user_text})
    return messages
