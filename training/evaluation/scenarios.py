"""Scripted multi-session scenarios for the reflection module, and their evaluation.

Each scenario tells facts in earlier sessions (summarized by the fast summarizer and
stored in a real Chroma store), then sends trigger lines and compares reflection's
decision with what the scenario expects. Used by the tests (accuracy bar), the
reflection benchmark, and the training evaluation.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from companion.buffer import BufferedTurn, turns_since_mentioned
from companion.reflection import Decision, Reflector
from memory.events import Turn, utcnow
from memory.fast_summarizer import FastSummarizer
from memory.store import ChromaMemoryStore
from persona_adapters import get_persona
from training.common import EVAL_DATA

SCENARIOS = EVAL_DATA / "reflection_scenarios.yaml"
_UNSET = object()


@dataclass(frozen=True)
class TriggerResult:
    scenario: str
    text: str
    decision: Decision
    expected: dict
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def load_scenarios(path: Path = SCENARIOS) -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def check(decision: Decision, expected: dict) -> tuple[str, ...]:
    """What differs between a decision and a trigger's expectations."""
    problems = []
    if decision.strategy != expected["strategy"]:
        problems.append(f"strategy {decision.strategy} != {expected['strategy']}")
    recall_type = expected.get("recall_type", _UNSET)
    if recall_type is None and decision.recall:
        problems.append(f"recalled {decision.recall[0].type} but none was expected")
    allowed = [recall_type] if isinstance(recall_type, str) else recall_type
    if recall_type not in (None, _UNSET) and (not decision.recall or decision.recall[0].type not in allowed):
        got = decision.recall[0].type if decision.recall else "nothing"
        problems.append(f"recalled {got}, expected {' or '.join(allowed)}")
    if "emotion" in expected and decision.emotion != expected["emotion"]:
        problems.append(f"emotion {decision.emotion} != {expected['emotion']}")
    return tuple(problems)


def run_scenarios(
    scenarios: list[dict], store: ChromaMemoryStore, summarizer: FastSummarizer, reflector: Reflector
) -> list[TriggerResult]:
    """Runs every scenario with a fresh player id; deterministic for fixed weights."""
    results = []
    for scenario in scenarios:
        persona = get_persona(scenario.get("persona", "mira"))
        player = f"scenario-{scenario['id']}-{uuid.uuid4().hex[:8]}"
        for s, session in enumerate(scenario.get("sessions") or []):
            for i, line in enumerate(session["lines"]):
                turn = Turn(
                    id=f"{player}-{s}-{i}",
                    role="player",
                    text=line,
                    at=utcnow() - timedelta(days=session["days_ago"]),
                )
                drafts = asyncio.run(summarizer.summarize([turn], npc_name=persona.name))
                store.add_sync(drafts, player_id=player, npc_id=persona.id, turns=[turn])
        history: list[BufferedTurn] = []
        for trigger in scenario["triggers"]:
            recalled = store.search_sync(trigger["text"], player_id=player, npc_id=persona.id, k=5)
            decision = reflector.before(
                trigger["text"],
                persona=persona,
                recalled=recalled,
                recent_mentions=turns_since_mentioned(history),
            )
            results.append(
                TriggerResult(scenario["id"], trigger["text"], decision, trigger, check(decision, trigger))
            )
            history += [
                BufferedTurn(turn=Turn(role="player", text=trigger["text"])),
                BufferedTurn(
                    turn=Turn(role="npc", text="..."), memories_used=[c.event_id for c in decision.recall]
                ),
            ]
        store.delete_sync(player_id=player)
    return results
