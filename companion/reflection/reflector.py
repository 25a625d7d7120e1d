"""The reflection module: gates before the reply, checks after it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from companion.reflection.boundary import KnowledgeBoundary
from companion.reflection.decision import ROLE_BREAK, Decision, Flag, PostCheck
from companion.reflection.emotion import EmotionClassifier
from companion.reflection.postcheck import NOT_KNOWING, PostChecker, draft_sentences, plain_quotes
from companion.reflection.recall import ASKS_TO_REMEMBER, choose_recall, combined_scores
from companion.reflection.recall_scorer import RecallScorer
from companion.reflection.strategy import StrategyModel
from memory.events import MemoryEvent, ScoredEvent
from memory.protocols import Embedder
from persona_adapters import Persona

TONES = {
    "sadness": "gentle and warm",
    "distress": "calm and reassuring",
    "anger": "calm and understanding, never defensive",
    "joy": "warm and celebratory",
}


@dataclass(frozen=True)
class ReflectionConfig:
    """Thresholds of the gates: probabilities of the learned models (`strategy`, `recall_scorer`),
    each joined with the reading it grew from (emotion, search relevance; see `recall.py`).

    Attributes:
        support_threshold: the strategy model's P(support) to support.
        support_confidence: ...or the emotion classifier's confidence in a negative emotion.
        refuse_threshold: its P(out of world) or P(injection) to refuse.
        explains_threshold: ...for a further sentence of a refusal to count as explaining the
            thing after all (higher: the gates were trained on players' lines, and an in-world
            offer such as "if a traveller sells one, I'll ask what it does" reads 0.65).
        memory_question_threshold: its P(asks what the character remembers).
        recall_threshold: the recall scorer's P(worth bringing up) for the first memory.
        relevance_bar: search relevance x type weight that counts as much as `recall_threshold`
            (the other reading a memory is brought up on; see `recall.combined_scores`).
        scorer_backed_bar: ...a lower one, where the scorer gives the pair at least
            `scorer_floor` (both chosen on the dev split, 2026-12-02).
        scorer_floor: the scorer's P(worth bringing up) below which only `relevance_bar` counts.
        second_recall_threshold: ...for a second one (of another type).
        recall_cooldown_turns: turns before a memory brought up may come back.
        max_words: the post-check's length limit.
    """

    support_threshold: float = 0.2  # chosen on the dev split (the gate under-fires at 0.5)
    support_confidence: float = 0.55
    refuse_threshold: float = 0.5
    explains_threshold: float = 0.8
    memory_question_threshold: float = 0.5
    recall_threshold: float = 0.5
    relevance_bar: float = 0.3
    scorer_backed_bar: float = 0.15
    scorer_floor: float = 0.05
    second_recall_threshold: float = 0.7
    recall_cooldown_turns: int = 6
    max_words: int = 90


class Reflector:
    """Decides each turn's strategy and checks each draft.

    Args:
        embedder: shared with memory search, so a line is embedded once per turn (cached).
        config: gate thresholds.
    """

    def __init__(self, embedder: Embedder, config: ReflectionConfig | None = None):
        self.config = config or ReflectionConfig()
        self.emotion = EmotionClassifier(embedder)
        self.strategy = StrategyModel(embedder)
        self.scorer = RecallScorer(embedder)
        self.boundary = KnowledgeBoundary(embedder)
        self.post = PostChecker(embedder, max_words=self.config.max_words)

    def warm(self, personas) -> None:
        """Embeds each persona's setting and domain now, not on the first player's turn."""
        for persona in personas:
            self.boundary.warm(persona)
            self.strategy.read("Hello.", persona)

    def before(
        self,
        text: str,
        *,
        persona: Persona,
        recalled: Sequence[ScoredEvent] = (),
        recent_mentions: Mapping[str, int] | None = None,
    ) -> Decision:
        """The strategy for replying to `text`.

        Args:
            text: the player's line.
            persona: who replies.
            recalled: memory search results for the line.
            recent_mentions: event id -> turns since the NPC last brought it up.
        """
        reading = self.emotion.read(text)
        gates = self.strategy.read(text, persona)
        config = self.config
        support = gates.support >= config.support_threshold or (
            reading.needs_support and reading.confidence >= config.support_confidence
        )
        asked = gates.memory_question >= config.memory_question_threshold or bool(
            ASKS_TO_REMEMBER.search(text)
        )
        recall = self._recall(list(recalled), text, recent_mentions or {}, supporting=support, asked=asked)
        emotion = reading.label if reading.needs_support or not support else "distress"
        reasons = [
            f"emotion {reading.label} ({reading.confidence:.2f})",
            f"gates: support {gates.support:.2f}, out of world {gates.out_of_world:.2f}, "
            f"injection {gates.injection:.2f}, memory question {gates.memory_question:.2f}",
        ]
        refuse_topic = self._refusal(text, gates, persona)
        if refuse_topic is not None:
            strategy, recall = "refuse", []
            reasons.append(f"asks about {refuse_topic!r}, outside {persona.name}'s world")
        elif support:
            strategy = "support"
            reasons.append(f"the player needs support ({emotion}): support first")
        elif recall:
            strategy = "recall"
        else:
            strategy = "answer"
        reasons += [f"recall: {c.content} ({c.reason}, value {c.value:.2f})" for c in recall]
        return Decision(
            strategy=strategy,
            emotion=emotion,
            emotion_confidence=reading.confidence,
            tone=TONES.get(emotion, persona.speaking_style or "natural"),
            recall=recall,
            refuse_topic=refuse_topic,
            asked_to_remember=asked and strategy != "refuse",
            reasons=reasons,
        )

    def _recall(self, recalled, text, recent_mentions, *, supporting: bool, asked: bool):
        config = self.config
        scores = self.scorer.score(
            text, [h.event.content for h in recalled], [str(h.event.type) for h in recalled]
        )
        return choose_recall(
            recalled,
            combined_scores(
                recalled,
                scores,
                config.recall_threshold,
                relevance_bar=config.relevance_bar,
                scorer_backed_bar=config.scorer_backed_bar,
                scorer_floor=config.scorer_floor,
            ),
            recent_mentions,
            threshold=config.recall_threshold,
            second_threshold=config.second_recall_threshold,
            cooldown_turns=config.recall_cooldown_turns,
            supporting=supporting,
            asked_to_remember=asked,
        )

    def _refusal(self, text: str, gates, persona: Persona) -> str | None:
        """What the line asks about that lies outside the role or the world (None: nothing)."""
        if gates.injection >= self.config.refuse_threshold:
            return ROLE_BREAK
        named = self.boundary.named(text, persona)
        if named is not None:
            return named
        if gates.out_of_world >= self.config.refuse_threshold:
            return "things outside this world"
        return None

    def memory_queries(self, draft: str) -> list[str]:
        """The texts whose nearest stored facts `after` needs (see `PostChecker.memory_queries`)."""
        return self.post.memory_queries(draft)

    def after(
        self,
        draft: str,
        *,
        decision: Decision,
        known: Sequence[MemoryEvent],
        player_lines: Sequence[str] = (),
        persona: Persona | None = None,
    ) -> PostCheck:
        """Flags on a draft reply (see `PostChecker.check`).

        With the persona, a refusal is also read sentence by sentence: one that says "I don't
        know what that is" and then goes on to explain it, or talks like an assistant, has not
        refused (`answered_out_of_domain`).
        """
        check = self.post.check(draft, decision=decision, known=known, player_lines=player_lines)
        if (
            not decision.refused
            or persona is None
            or any(f.kind == "answered_out_of_domain" for f in check.flags)
        ):
            return check
        return PostCheck(flags=[*check.flags, *self._goes_on_about_it(draft, persona)])

    def _goes_on_about_it(self, draft: str, persona: Persona) -> list[Flag]:
        """Sentences of a refusal, other than the not-knowing ones, that the strategy model
        reads as outside the persona's world or as role-breaking talk."""
        for sentence in draft_sentences(plain_quotes(draft)):
            if NOT_KNOWING.search(sentence):
                continue
            gates = self.strategy.read(sentence, persona)
            if max(gates.out_of_world, gates.injection) >= self.config.explains_threshold:
                return [Flag(kind="answered_out_of_domain", detail=f"goes on: {sentence!r}")]
        return []
