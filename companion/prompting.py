"""Turns a persona and a conversation into chat messages for the backbone."""

from __future__ import annotations

from collections.abc import Sequence

from companion.backbone.prompt_template import Message
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
    """The persona's system prompt, the conversation so far, this turn's note, the player's line.

    What changes every turn (lore that matches the line, game events, reflection's
    guidance) goes in a second system message just before the player's line, never inside
    the persona's system prompt: an engine with a prefix cache then reuses the persona
    prompt across players and the conversation across turns (NOTES: prefill is the cost
    when many players talk at once).

    Args:
        persona: who answers.
        history: earlier turns, oldest first, roles "user" / "assistant" (the persona's
            first message, when shown, is the first assistant turn).
        user_text: what the player just said.
        guidance: reflection's instructions for this turn (see companion.reflection.guidance).
        world: things that just happened in the game that the NPC saw, oldest first.
    """
    messages = [{"role": "system", "content": persona_system_prompt(persona)}]
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    if note := turn_note(persona, user_text, guidance=guidance, world=world):
        messages.append({"role": "system", "content": note})
    messages.append({"role": "user", "content": user_text})
    return messages


def turn_note(persona: Persona, user_text: str, *, guidance: str = "", world: Sequence[str] = ()) -> str:
    """This turn's context for the persona: matching lore, what it just saw, how to answer."""
    parts = []
    if lore := persona.lore_for(user_text):
        parts.append("What you know about this: " + " ".join(lore))
    if world:
        parts.append("Just now, you saw: " + " ".join(w.rstrip(".") + "." for w in world))
    if guidance:
        parts.append(f"For this reply:\n{guidance}")
    return "\n".join(parts)


def with_correction(messages: Sequence[Message], correction: str) -> list[dict[str, str]]:
    """`messages` with a correction added to this turn's note (a second draft after a failed check)."""
    out = [dict(m) for m in messages]
    if len(out) >= 2 and out[-2]["role"] == "system" and len(out) > 2:
        out[-2]["content"] += "\n" + correction
    else:
        out.insert(len(out) - 1, {"role": "system", "content": correction})
    return out
