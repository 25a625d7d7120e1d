"""The generative summarizer: a language model reads the turns and writes events as JSON.

Any model that satisfies `TextGenerator` works: the default backbone, a bigger local
model, or an OpenAI-compatible endpoint wrapped by the caller. A trained summarizer
LoRA adapter plugs in through `adapter`. Small models often emit broken JSON, so the
output is repaired (fences, trailing commas, single quotes, unclosed brackets) and
every item is validated against the event schema; what does not validate is dropped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from memory.dates import resolve_relative_dates
from memory.events import DEFAULT_IMPORTANCE, EVENT_TYPES, EventDraft, EventType, Turn
from memory.protocols import TextGenerator

log = logging.getLogger(__name__)

SYSTEM_PROMPT = f"""You extract long-term memories about the player from a conversation with a game character.
Write a JSON array. Each item is an object with:
- "type": one of {", ".join(EVENT_TYPES)}
- "content": one short third-person sentence starting with "The player"
- "importance": 1 to 10 (health, plans and life events matter most)
Types: personal_info = name, age, job, home; preference = likes and dislikes; health = illness, allergy,
injury; relationship = family, partners, friends, pets; plan = future goals and appointments;
life_event = things that happened to the player; emotion = how the player feels; shared_history = what the
player and the character did together.
Only facts the player states about themselves. Greetings, thanks and questions give []. Output only JSON."""

EXAMPLES = [
    (
        "Player: Hi! I have a really sensitive stomach, so nothing too spicy. My sister Anna is getting married.",
        '[{"type": "health", "content": "The player has a really sensitive stomach.", "importance": 8}, '
        '{"type": "relationship", "content": "The player\'s sister Anna is getting married.", "importance": 6}]',
    ),
    ("Player: Thanks, see you tomorrow!", "[]"),
]


def build_messages(turns: Sequence[Turn], npc_name: str | None = None) -> list[dict[str, str]]:
    """The chat prompt: instructions, two worked examples, then the turns to summarize."""
    speaker = npc_name or "Character"
    lines = [f"{'Player' if t.role == 'player' else speaker}: {t.text}" for t in turns]
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for user, assistant in EXAMPLES:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": "\n".join(lines)})
    return messages


def repair_json(raw: str) -> Any:
    """The JSON value a model meant to write, or None when nothing can be recovered."""
    text = re.sub(r"```(?:json)?", "", raw).strip()
    start = min((i for i in (text.find("["), text.find("{")) if i != -1), default=-1)
    if start == -1:
        return None
    text = text[start:]
    candidates = [text]
    end = max(text.rfind("]"), text.rfind("}"))
    if end != -1:
        candidates.append(text[: end + 1])
    for candidate in candidates:
        for fixed in _repairs(candidate):
            try:
                return json.loads(fixed)
            except json.JSONDecodeError:
                continue
    objects = []  # last resort: every {...} that parses on its own
    for match in re.finditer(r"\{[^{}]*\}", text):
        for fixed in _repairs(match.group(0)):
            try:
                objects.append(json.loads(fixed))
                break
            except json.JSONDecodeError:
                continue
    return objects or None


def _repairs(text: str) -> list[str]:
    no_trailing = re.sub(r",\s*([\]}])", r"\1", text)
    double_quoted = re.sub(r"(?<![A-Za-z])'([^']*)'(?=\s*[:,}\]])", r'"\1"', no_trailing)
    closed = double_quoted + "}" * max(0, double_quoted.count("{") - double_quoted.count("}"))
    closed += "]" * max(0, closed.count("[") - closed.count("]"))
    return [text, no_trailing, double_quoted, closed]


def drafts_from_json(value: Any) -> list[EventDraft]:
    """Validated drafts from parsed model output; invalid items are dropped (and logged)."""
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    drafts = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("type", "")).strip().lower().replace(" ", "_").replace("-", "_")
        if kind not in EVENT_TYPES:
            log.debug("dropping item with unknown type %r", item.get("type"))
            continue
        importance = item.get("importance", DEFAULT_IMPORTANCE[EventType(kind)])
        try:
            importance = min(10, max(1, int(float(importance))))
            drafts.append(EventDraft(type=kind, content=str(item.get("content", "")), importance=importance))
        except (TypeError, ValueError, ValidationError) as e:
            log.debug("dropping invalid item %r: %s", item, e)
    return drafts


class GenerativeSummarizer:
    """Summarizes turns with a language model.

    Args:
        generator: the model.
        adapter: a trained summarizer LoRA adapter's name on that model, or None.
        max_new_tokens: output budget.
    """

    def __init__(self, generator: TextGenerator, *, adapter: str | None = None, max_new_tokens: int = 160):
        self.generator = generator
        self.adapter = adapter
        self.max_new_tokens = max_new_tokens

    async def summarize(self, turns: Sequence[Turn], *, npc_name: str | None = None) -> list[EventDraft]:
        if not any(t.role == "player" for t in turns):
            return []
        raw = await self.generator.complete(
            build_messages(turns, npc_name), adapter=self.adapter, max_new_tokens=self.max_new_tokens
        )
        value = repair_json(raw)
        if value is None:
            log.info("generative summarizer produced no JSON: %r", raw[:200])
            return []
        said_at = max(t.at for t in turns)  # relative dates in the facts mean days around the last turn
        return [
            d.model_copy(update={"content": resolve_relative_dates(d.content, said_at)})
            for d in drafts_from_json(value)
        ]
