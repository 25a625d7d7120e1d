"""Reflection's decision as instructions the backbone follows, short enough for small models."""

from __future__ import annotations

from companion.reflection.decision import Decision, PostCheck
from persona_adapters import Persona


def second_person(content: str) -> str:
    """'The player has a sensitive stomach.' -> 'you have a sensitive stomach' (the NPC speaks to the player)."""
    text = content.rstrip(".")
    for third, second in (
        ("The player's ", "your "), ("the player's ", "your "), ("The player has ", "you have "),
        ("The player is ", "you are "), ("The player was ", "you were "), ("The player ", "you "),
        ("the player", "you"), (" their ", " your "),
    ):  # fmt: skip
        text = text.replace(third, second)
    return text


def guidance(decision: Decision, persona: Persona) -> str:
    """Instructions for this turn, added to the system prompt."""
    lines = []
    if decision.strategy == "refuse":
        topic = decision.refuse_topic or "that"
        lines.append(
            f"The player asked about {topic}, which {persona.name} has never heard of. "
            f"Stay in character: say you don't know what that is, in {persona.name}'s own words, "
            "and offer something from your world instead. Do not explain it."
        )
    if decision.strategy == "support":
        lines.append(
            f"The player feels {decision.emotion}. Be {decision.tone}: acknowledge the feeling first, "
            "then offer comfort or a kind question. No lecturing."
        )
    elif decision.emotion == "joy":
        lines.append(f"The player is happy. Be {decision.tone} and share the joy.")
    if decision.recall:
        first = decision.recall[0]
        lines.append(
            f"You remember that {second_person(first.content)}. Bring it up naturally now, as a caring friend would "
            f'(for example: "Didn\'t you tell me {second_person(first.content)}?").'
        )
    return "\n".join(lines)


def correction(check: PostCheck, persona: Persona) -> str:
    """Instructions for the one retry after a failed post-check."""
    fixes = {
        "breaks_character": f"You are {persona.name}, a person in this world, not an AI or assistant. Never mention AI.",
        "invented_memory": "Only mention things the player actually told you.",
        "contradicts_memory": "Use what the player told you most recently; do not repeat outdated facts.",
        "ignored_recall": "Bring up the remembered fact named above.",
        "too_long": "Answer in at most three short sentences.",
        "answered_out_of_domain": f"{persona.name} does not know that thing: say you have never heard of it.",
    }
    kinds = dict.fromkeys(flag.kind for flag in check.flags)
    return "Your previous answer was rejected. " + " ".join(fixes[k] for k in kinds)


def recall_line(content: str) -> str:
    """An in-character question that brings a memory up, for a draft that left it out twice."""
    return f"Didn't you tell me {second_person(content)}?"


def refusal_line(topic: str | None, persona: Persona) -> str:
    """An in-character refusal, for a draft that explained an out-of-world thing twice."""
    thing = topic.split(",")[0].strip() if topic else "that"
    return f"{thing[:1].upper() + thing[1:]}? Never heard of such a thing, I'm afraid. Ask me about something from around here."
