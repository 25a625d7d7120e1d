"""One turn, as in DESIGN §2: buffer + recall + reflection -> prompt -> stream -> post-check -> reply.

`TurnPipeline.turn(...)` is an async iterator of `TurnEvent`s: "token" (a text delta),
"restart" (the post-check rejected the draft; discard the streamed text, a corrected
draft follows), then one "reply" with the final text and its metadata. The turn goes to
the memory writer without waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from companion.backbone.config import GenerationParams
from companion.backbone.routing import RoutingStats
from companion.backbone.streaming import GenerationSummary
from companion.buffer import BufferedTurn, ShortTermBuffer, turns_since_mentioned
from companion.erasure import ErasureLog, InProcessErasureLog
from companion.errors import AdapterError
from companion.memory_writer import MemoryWriter
from companion.prompting import build_messages, persona_system_prompt, with_correction
from companion.protocols import Generator
from companion.reflection import Decision, PostCheck, Reflector, correction, guidance
from companion.reflection.guidance import memory_line, recall_line, refusal_line
from companion.reflection.postcheck import BREAKS_CHARACTER
from memory.events import MemoryEvent, Turn
from memory.protocols import MemoryStore
from persona_adapters import Persona

log = logging.getLogger(__name__)


@dataclass
class TurnResult:
    """The final reply and what went into it (the `reply` message's metadata)."""

    text: str
    decision: Decision
    checks: list[PostCheck]
    regenerated: bool
    memories_used: list[str]
    player_turn_id: str
    npc_turn_id: str
    generation: GenerationSummary = field(default_factory=GenerationSummary)
    routing: RoutingStats = field(default_factory=RoutingStats)
    reflection_ms: float = 0.0
    fallbacks: list[str] = field(default_factory=list)

    @property
    def strategy(self) -> str:
        return self.decision.strategy

    @property
    def refused(self) -> bool:
        return self.decision.refused

    def metadata(self) -> dict:
        return {
            "strategy": self.decision.strategy,
            "emotion": self.decision.emotion,
            "memories_used": self.memories_used,
            "refused": self.decision.refused,
            "regenerated": self.regenerated,
            "flags": [f.kind for check in self.checks for f in check.flags],
            "fallbacks": self.fallbacks,
            "reasons": self.decision.reasons,
        }


@dataclass(frozen=True)
class TurnEvent:
    kind: Literal["token", "restart", "reply"]
    text: str = ""
    attempt: int = 1
    result: TurnResult | None = None


@dataclass
class _Prepared:
    """A turn's inputs to the model: what stage one (prepare) found."""

    persona: Persona
    player_turn: Turn
    decision: Decision
    recalled: list[MemoryEvent]
    player_id: str
    npc_id: str
    player_lines: list[str]
    messages: list
    adapter: str | None
    reflection_ms: float


@dataclass
class _Drafting:
    """What the drafts produced: the last draft, every post-check, the last generation's figures."""

    draft: str = ""
    checks: list[PostCheck] = field(default_factory=list)
    summary: GenerationSummary = field(default_factory=GenerationSummary)
    routing: RoutingStats = field(default_factory=RoutingStats)


class TurnPipeline:
    """Runs turns for any player and NPC.

    Args:
        generator: the backbone.
        store: the memory store.
        reflector: reflection gates and post-checks.
        buffer: short-term conversation buffer.
        writer: background memory writer.
        persona_of: npc id -> persona (raises UnknownPersonaError for an unknown id).
        adapter_dir_of: npc id -> the persona's adapter directory, loaded onto the backbone
            the first time that persona speaks.
        params: decoding settings.
        history_turns: turns of context in the prompt.
        recall_k: memories retrieved per turn.
        erasures: hard deletes; a turn that began before one of its player is not remembered.
    """

    def __init__(
        self,
        generator: Generator,
        store: MemoryStore,
        reflector: Reflector,
        buffer: ShortTermBuffer,
        writer: MemoryWriter,
        persona_of: Callable[[str], Persona],
        *,
        params: GenerationParams | None = None,
        history_turns: int = 8,
        recall_k: int = 5,
        adapter_dir_of: Callable[[str], Path | None] | None = None,
        erasures: ErasureLog | None = None,
    ):
        self.generator = generator
        self.store = store
        self.reflector = reflector
        self.buffer = buffer
        self.writer = writer
        self.persona_of = persona_of
        self.params = params or GenerationParams()
        self.history_turns = history_turns
        self.recall_k = recall_k
        self.adapter_dir_of = adapter_dir_of
        self.erasures = erasures or InProcessErasureLog()
        self._unusable: set[str] = set()  # personas whose adapter failed to load; not retried

    async def turn(
        self,
        *,
        player_id: str,
        npc_id: str,
        text: str,
        game_time: str | None = None,
        world: Sequence[str] = (),
    ) -> AsyncIterator[TurnEvent]:
        """Runs one turn in three stages (prepare, draft and check, commit); `world` lists
        game events the NPC saw since the last turn."""
        prepared = await self._prepare(player_id, npc_id, text, game_time, world)
        drafting = _Drafting()
        async for event in self._draft_and_check(prepared, drafting):
            yield event
        result = await self._commit(prepared, drafting, player_id=player_id, npc_id=npc_id)
        yield TurnEvent("reply", text=result.text, attempt=len(result.checks), result=result)

    async def _prepare(
        self, player_id: str, npc_id: str, text: str, game_time: str | None, world: Sequence[str]
    ) -> _Prepared:
        """Recall, reflection's decision and the prompt."""
        persona = self.persona_of(npc_id)
        history = await self.buffer.recent(player_id=player_id, npc_id=npc_id, n=self.history_turns)
        started = time.perf_counter()
        recalled = await self.store.search(text, player_id=player_id, npc_id=npc_id, k=self.recall_k)
        decision = await asyncio.to_thread(  # embeds: CPU work off the event loop
            self.reflector.before,
            text,
            persona=persona,
            recalled=recalled,
            recent_mentions=turns_since_mentioned(history),
        )
        reflection_ms = 1000 * (time.perf_counter() - started)
        chat = [
            {"role": "user" if b.turn.role == "player" else "assistant", "content": b.turn.text}
            for b in history
        ]
        return _Prepared(
            persona=persona,
            player_turn=Turn(role="player", text=text, game_time=game_time),
            decision=decision,
            recalled=[r.event for r in recalled],
            player_id=player_id,
            npc_id=npc_id,
            player_lines=[b.turn.text for b in history if b.turn.role == "player"] + [text],
            messages=build_messages(persona, chat, text, guidance=guidance(decision, persona), world=world),
            adapter=await asyncio.to_thread(self._adapter, persona),  # a first load may convert files
            reflection_ms=reflection_ms,
        )

    async def _known_near(self, prepared: _Prepared, draft: str) -> list[MemoryEvent]:
        """The stored facts the post-check compares `draft` with: those recalled for the line and
        those nearest to the draft's claims and sentences (not the whole collection)."""
        related = await self.store.related(
            self.reflector.memory_queries(draft), player_id=prepared.player_id, npc_id=prepared.npc_id
        )
        return list({e.id: e for e in [*prepared.recalled, *related]}.values())

    async def _draft_and_check(self, prepared: _Prepared, drafting: _Drafting) -> AsyncIterator[TurnEvent]:
        """Streams a draft and post-checks it; a rejected draft gets one corrected retry."""
        messages, persona = prepared.messages, prepared.persona
        for attempt in (1, 2):
            if attempt == 2:
                note = correction(drafting.checks[-1], persona)
                yield TurnEvent("restart", text=note, attempt=2)
                messages = with_correction(messages, note)
            pieces: list[str] = []
            drafting.summary, drafting.routing = GenerationSummary(), RoutingStats()
            async for delta in self.generator.stream(
                messages,
                adapter=prepared.adapter,
                params=self.params,
                summary=drafting.summary,
                routing_stats=drafting.routing,
            ):
                pieces.append(delta)
                yield TurnEvent("token", text=delta, attempt=attempt)
                if BREAKS_CHARACTER.search("".join(pieces)):
                    break  # stop generating a draft that is already lost
            drafting.draft = "".join(pieces).strip()
            check = await asyncio.to_thread(
                self.reflector.after,
                drafting.draft,
                decision=prepared.decision,
                known=await self._known_near(prepared, drafting.draft),
                player_lines=prepared.player_lines,
                persona=prepared.persona,
            )
            drafting.checks.append(check)
            if check.ok:
                return

    async def _commit(
        self, prepared: _Prepared, drafting: _Drafting, *, player_id: str, npc_id: str
    ) -> TurnResult:
        """The final text (repaired where the last draft still failed), remembered."""
        decision, last = prepared.decision, drafting.checks[-1]
        final, fallbacks = _finalize(
            drafting.draft,
            last,
            decision,
            prepared.persona,
            trim=drafting.summary.finish_reason == "length",
            recall_threshold=self.reflector.config.recall_threshold,
        )
        ignored = any(f.kind == "ignored_recall" for f in last.flags) and not {
            "recall_question",
            "memory_answer",
        } & set(fallbacks)
        memories_used = [] if ignored else [c.event_id for c in decision.recall]
        npc_turn = Turn(role="npc", text=final)
        await self._remember(
            prepared.player_turn,
            npc_turn,
            memories_used,
            player_id=player_id,
            npc_id=npc_id,
            persona=prepared.persona,
        )
        return TurnResult(
            text=final,
            decision=decision,
            checks=drafting.checks,
            regenerated=len(drafting.checks) > 1,
            memories_used=memories_used,
            player_turn_id=prepared.player_turn.id,
            npc_turn_id=npc_turn.id,
            generation=drafting.summary,
            routing=drafting.routing,
            reflection_ms=prepared.reflection_ms,
            fallbacks=fallbacks,
        )

    async def _remember(
        self,
        player_turn: Turn,
        npc_turn: Turn,
        memories_used: list[str],
        *,
        player_id: str,
        npc_id: str,
        persona: Persona,
    ) -> None:
        """The turn into the short-term buffer and to the memory writer, unless the player was
        hard-deleted after it began (the delete wins over the turn in flight)."""
        if await self.erasures.erased_after(player_id=player_id, npc_id=npc_id, since=player_turn.at):
            log.info("player %s was hard-deleted during this turn; it is not remembered", player_id)
            return
        await self.buffer.append(BufferedTurn(turn=player_turn), player_id=player_id, npc_id=npc_id)
        await self.buffer.append(
            BufferedTurn(turn=npc_turn, memories_used=memories_used), player_id=player_id, npc_id=npc_id
        )
        await self.writer.submit(
            [player_turn, npc_turn], player_id=player_id, npc_id=npc_id, npc_name=persona.name
        )

    def warm(self, personas: Sequence[Persona]) -> None:
        """Loads these personas' adapters and lets the engine cache their system prompts (blocking)."""
        self.generator.warm(
            [([{"role": "system", "content": persona_system_prompt(p)}], self._adapter(p)) for p in personas]
        )

    def _adapter(self, persona: Persona) -> str | None:
        """The persona's adapter, loaded on first use; None when it has none (or it does not fit)."""
        adapters = self.generator.adapters
        if (
            not adapters.has(persona.id)
            and self.adapter_dir_of is not None
            and persona.id not in self._unusable
        ):
            path = self.adapter_dir_of(persona.id)
            if path is not None:
                try:
                    adapters.load(persona.id, path)
                    log.info("loaded adapter of %s from %s", persona.id, path)
                except AdapterError as e:  # e.g. trained for another backbone: the persona speaks without it
                    self._unusable.add(persona.id)
                    log.warning("persona %s speaks without its adapter: %s", persona.id, e)
        return persona.id if adapters.has(persona.id) else None


def _finalize(
    draft: str, check: PostCheck, decision: Decision, persona: Persona, *, trim: bool, recall_threshold: float
) -> tuple[str, list[str]]:
    """The text the player sees, and the fallbacks used when the last draft still failed.

    A small backbone may ignore guidance twice; the decision is kept anyway: an unfinished
    last sentence is cut, sentences that break character are dropped, an out-of-world
    explanation becomes an in-character refusal, a left-out memory is asked about when it
    cleared the full recall bar (not one lowered for a supporting turn, where the model's own
    words are safer than a forced question), and a player who asked what the character
    remembers is told ("I remember that you ...").
    """
    kinds = {f.kind for f in check.flags}
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", draft.strip()) if s]
    fallbacks = []
    if trim and len(sentences) > 1 and sentences[-1][-1] not in ".!?\"'*":
        sentences, fallbacks = sentences[:-1], ["trimmed_unfinished_sentence"]
    if "breaks_character" in kinds:
        sentences = [s for s in sentences if not BREAKS_CHARACTER.search(s)]
        fallbacks.append("dropped_out_of_character")
    if "answered_out_of_domain" in kinds:
        return refusal_line(decision.refuse_topic, persona), [*fallbacks, "in_character_refusal"]
    if "ignored_recall" in kinds and decision.recall and decision.asked_to_remember:
        sentences.append(memory_line(decision.recall[0].content, persona.name))
        fallbacks.append("memory_answer")
    elif "ignored_recall" in kinds and decision.recall and decision.recall[0].value >= recall_threshold:
        sentences.append(recall_line(decision.recall[0].content, persona.name))
        fallbacks.append("recall_question")
    text = " ".join(sentences)
    return text or f"*{persona.name} pauses, lost in thought.* Sorry, where were we?", fallbacks
