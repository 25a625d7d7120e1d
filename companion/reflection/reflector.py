"""The reflection module: gates before the reply, checks after it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from companion.reflection.boundary import KnowledgeBoundary
from companion.reflection.decision import Decision, PostCheck
from companion.reflection.emotion import EmotionClassifier
from companion.reflection.postcheck import PostChecker
from companion.reflection.recall import ASKS_TO_REMEMBER, choose_recall
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
    """Thresholds of the gates (see each gate's module for what they mean)."""

    support_confidence: float = 0.55
    recall_threshold: float = 0.3
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
        self.boundary = KnowledgeBoundary(embedder)
        self.post = PostChecker(embedder, max_words=self.config.max_words)

    def warm(self, personas) -> None:
        """Embeds each persona's boundary prototypes now, not on the first player's turn."""
        for persona in personas:
            self.boundary.check("What is this?", persona)

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
        boundary = self.boundary.check(text, persona)
        support = reading.needs_support and reading.confidence >= self.config.support_confidence
        recall = choose_recall(
            recalled,
            recent_mentions or {},
            threshold=self.config.recall_threshold,
            cooldown_turns=self.config.recall_cooldown_turns,
            supporting=support,
            asked_to_remember=bool(ASKS_TO_REMEMBER.search(text)),
        )
        reasons = [f"emotion {reading.label} ({reading.confidence:.2f})"]
        if boundary.out_of_domain:
            strategy, recall = "refuse", []
            reasons.append(
                f"asks about {boundary.topic!r} (similarity {boundary.refuse_similarity:.2f} vs in-domain "
                f"{boundary.domain_similarity:.2f}), outside {persona.name}'s knowledge"
            )
        elif support:
            strategy = "support"
            reasons.append(f"the player is {reading.label}: support first")
        elif recall:
            strategy = "recall"
        else:
            strategy = "answer"
        reasons += [f"recall: {c.content} ({c.reason}, value {c.value:.2f})" for c in recall]
        return Decision(
            strategy=strategy,
            emotion=reading.label,
            emotion_confidence=reading.confidence,
            tone=TONES.get(reading.label, persona.speaking_style or "natural"),
            recall=recall,
            refuse_topic=boundary.topic if boundary.out_of_domain else None,
            reasons=reasons,
        )

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
    ) -> PostCheck:
        """Flags on a draft reply (see `PostChecker.check`)."""
        return self.post.check(draft, decision=decision, known=known, player_lines=player_lines)
