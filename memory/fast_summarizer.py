"""The fast summarizer: a linear classifier over sentence embeddings, milliseconds per turn.

Each player sentence is embedded (all-MiniLM-L6-v2), typed as one of the eight event
types or "none" by a softmax layer trained by `training/classifiers/fast_summarizer.py` on
data built for this project, and rewritten as a third-person fact by rules. Its
weights (about 14 kB) ship in `memory/weights/`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from memory.classifier import EmbeddingClassifier
from memory.dates import resolve_relative_dates
from memory.events import DEFAULT_IMPORTANCE, EventDraft, EventType, Turn
from memory.protocols import Embedder
from memory.rewrite import detect_slot, to_third_person

WEIGHTS_PATH = Path(__file__).parent / "weights" / "fast_summarizer.npz"
NONE = "none"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
# "I love spicy food, and I have a dog" holds two facts: split before a new first-person clause.
_CLAUSE = re.compile(
    r"(?:[,;]\s*(?:and|but|also|plus|though)?\s*|\s+(?:and|but|also|plus)\s+)(?=(?:I|I'm|I've|I'll|my|My)\s)"
)
_INTENSE = re.compile(
    r"\b(really|very|so|terribl[ey]|awful|can't stand|hate|love|always|never|severe)\b", re.I
)
_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'll|i'd|my|me|we|we're|our|us|mine|myself)\b", re.I)


def split_sentences(text: str) -> list[str]:
    """Splits a player's message into statements: sentences (. ! ? then a capital), and
    clauses joined by "and", "but"... that start again with I or my."""
    out = []
    for sentence in _SENTENCE_END.split(text.strip()):
        pieces = [p.strip(" ,;") for p in _CLAUSE.split(sentence)]
        pieces = [p[:1].upper() + p[1:] for p in pieces if p]
        out += [p if p[-1] in ".!?" else p + "." for p in pieces[:-1]] + pieces[-1:]
    return out


class FastSummarizer:
    """Types each player sentence and rewrites it as a fact.

    Args:
        embedder: the same sentence embedder the weights were trained with.
        weights_path: an .npz with `weight` (n_labels, dim), `bias` (n_labels,), `labels`.
        none_threshold: a sentence whose probability of being chit-chat ("none") is this or
            more gives no event. The decision is "is it a fact?" (P(none) against the rest
            together), then "which type?": a sentence split 44% life_event, 30% plan, 20%
            emotion, 6% none is a fact. Picking the top type only when it alone passed a bar
            (before) dropped a fifth of the facts in LoCoMo conversations.
    """

    def __init__(self, embedder: Embedder, *, weights_path: Path | None = None, none_threshold: float = 0.5):
        self.classifier = EmbeddingClassifier(
            embedder,
            weights_path or WEIGHTS_PATH,
            retrain_hint="python -m training.classifiers.fast_summarizer",
        )
        self.embedder = embedder
        self.none_threshold = none_threshold

    def classify(self, sentences: Sequence[str]) -> list[tuple[str, float]]:
        """(label, probability) per sentence: the likeliest event type and its probability when
        P(none) < `none_threshold`, else ("none", P(none))."""
        if not sentences:
            return []
        probabilities = self.classifier.probabilities(sentences)
        none = self.classifier.labels.index(NONE)
        out = []
        for row in probabilities:
            if row[none] >= self.none_threshold:
                out.append((NONE, float(row[none])))
                continue
            types = row.copy()
            types[none] = -1.0
            best = int(types.argmax())
            out.append((self.classifier.labels[best], float(row[best])))
        return out

    async def summarize(self, turns: Sequence[Turn], *, npc_name: str | None = None) -> list[EventDraft]:
        """Drafts from the player's sentences in `turns`; NPC lines and chit-chat give none."""
        return self.summarize_sync(turns, npc_name=npc_name)

    def summarize_sync(self, turns: Sequence[Turn], *, npc_name: str | None = None) -> list[EventDraft]:
        said = [(s, t.at) for t in turns if t.role == "player" for s in split_sentences(t.text)]
        # A fact about the player is said about the player: no first person, no fact.
        said = [(s, at) for s, at in said if _FIRST_PERSON.search(s) or s.lower().startswith("remember")]
        drafts = []
        for (sentence, at), (label, _) in zip(said, self.classify([s for s, _ in said]), strict=True):
            if label == NONE or sentence.endswith("?") and label != EventType.SHARED_HISTORY:
                continue
            event_type = EventType(label)
            importance = min(10, DEFAULT_IMPORTANCE[event_type] + (1 if _INTENSE.search(sentence) else 0))
            drafts.append(
                EventDraft(
                    type=event_type,
                    content=resolve_relative_dates(to_third_person(sentence, npc_name), at),
                    importance=importance,
                    slot=detect_slot(label, sentence),
                )
            )
        return drafts
