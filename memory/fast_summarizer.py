"""The fast summarizer: a linear classifier over sentence embeddings, milliseconds per turn.

Each player sentence is embedded (all-MiniLM-L6-v2), typed as one of the eight event
types or "none" by a softmax layer trained by `training/classifiers/fast_summarizer.py` on
data built for this project, and rewritten as a third-person fact by rules. Its
weights (about 14 kB) ship in `memory/weights/`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

from memory.classifier import EmbeddingClassifier
from memory.dates import resolve_relative_dates
from memory.events import DEFAULT_IMPORTANCE, EventDraft, EventType, Turn
from memory.protocols import Embedder
from memory.rewrite import PAST_IRREGULAR, SAYS_YOU, detect_slot, restore_dropped_subject, to_third_person

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


# "My wife and I are renovating": one subject, not two clauses (the mark keeps _CLAUSE off it)
_COMPOUND_SUBJECT = re.compile(
    r"\b((?:[Mm]y|[Oo]ur) (?:(?!(?:is|are|was|were|has|have|had|and|[\w'-]+ed)\b)[\w'-]+ ){1,3}?and) I\b"
)
_KEEP = "\u2060"
# A sentence about something else that starts so reads on after "The player said ...".
_LOWER_FIRST = frozenset(
    "It It's Its They They're Their That That's This These Those The There There's He He's His She "
    "She's Her A An".split()
)
_DETERMINERS = frozenset({"my", "our", "his", "her", "their", "a", "an", "the"})
# words that end a noun phrase: prepositions, time words, verbs a noun phrase is followed by
_PHRASE_END = frozenset(
    "in on at to for with from by of about and but so last this next every each all since when while who "
    "that which is are was were has have had lives loves works moved died taught got named called".split()
)
_OBJECT_PRONOUN = re.compile(r"\b(it|him|her)\b(?:\s+(?P<next>[\w'-]+))?", re.IGNORECASE)


def split_sentences(text: str) -> list[str]:
    """Splits a player's message into statements: sentences (. ! ? then a capital), and
    clauses joined by "and", "but"... that start again with I or my. A clause's "it", "him" or
    "her" becomes what the clause before it named ("I bought a tent and I'm taking it" ->
    "I'm taking the tent")."""
    out = []
    for sentence in _SENTENCE_END.split(text.strip()):
        sentence = _COMPOUND_SUBJECT.sub(lambda m: f"{m.group(1)} I{_KEEP}", sentence)
        pieces = [p.strip(" ,;").replace(_KEEP, "") for p in _CLAUSE.split(sentence)]
        pieces = [p[:1].upper() + p[1:] for p in pieces if p]
        pieces = pieces[:1] + [_resolve_pronouns(before, p) for before, p in pairwise(pieces)]
        out += [p if p[-1] in ".!?" else p + "." for p in pieces[:-1]] + pieces[-1:]
    return out


_PREPOSITION = re.compile(
    r"\b(?:in|on|at|to|into|from|under|near|by|behind|above|below|inside|over)\s+$", re.I
)


def _noun_phrases(clause: str) -> list[str]:
    """The clause's noun phrases ("a new bike", "my mother"), those after a preposition ("in the
    attic") last: "it" means the thing, not the place."""
    phrases, places = [], []
    words = [(m.group(0), m.start()) for m in re.finditer(r"[\w'-]+", clause)]
    for i, (word, start) in enumerate(words):
        if word.lower() not in _DETERMINERS:
            continue
        kept = [word]
        for following, _ in words[i + 1 : i + 4]:
            low = following.lower()
            if low in _PHRASE_END or low in PAST_IRREGULAR or low in _DETERMINERS or low.endswith("ed"):
                break
            kept.append(following)
        if len(kept) > 1:
            place = _PREPOSITION.search(clause[:start])
            (places if place else phrases).append(" ".join(kept))
    return places + phrases


def _resolve_pronouns(before: str, clause: str) -> str:
    """ "it" -> the last thing the clause before named; "him"/"her" -> the first person it named
    ("my X"); a possessive "her" -> "my X's". Articles become "the": a tent -> the tent."""
    phrases = _noun_phrases(before)
    if not phrases:
        return clause
    people = [p for p in phrases if p.lower().startswith(("my ", "our "))]

    def named(match: re.Match) -> str:
        pronoun, following = match.group(1).lower(), match.group("next")
        if pronoun == "it":
            target = phrases[-1]
        elif people:
            target = people[0]
        else:
            return match.group(0)
        target = re.sub(r"^(?:a|an)\s", "the ", target, flags=re.IGNORECASE)
        target = target[:1].lower() + target[1:]
        possessive = pronoun == "her" and following and following.lower() not in _PHRASE_END
        tail = f" {following}" if following else ""
        return f"{target}'s{tail}" if possessive else f"{target}{tail}"

    return _OBJECT_PRONOUN.sub(named, clause)


class FastSummarizer:
    """Types each player sentence and rewrites it as a fact. A sentence that drops its "I" in
    chat style ("Just started aerial yoga last week.") gets it back first
    (`memory.rewrite.restore_dropped_subject`), so it is typed and kept as the player's fact.

    Args:
        embedder: the same sentence embedder the weights were trained with.
        weights_path: an .npz with `weight` (n_labels, dim), `bias` (n_labels,), `labels`.
        none_threshold: a sentence whose probability of being chit-chat ("none") is this or
            more gives no event. The decision is "is it a fact?" (P(none) against the rest
            together), then "which type?": a sentence split 44% life_event, 30% plan, 20%
            emotion, 6% none is a fact. Picking the top type only when it alone passed a bar
            (before) dropped a fifth of the facts in LoCoMo conversations.
        told_threshold: a sentence without the first person ("They eat fruit and insects.")
            is kept as "The player said they eat fruit and insects." when its likeliest type
            has this probability or more (and it is a statement of five words or more, not
            about the character). 0.5 on LoCoMo's development half: single-hop recall 0.658
            -> 0.687, 1.04 -> 1.19 events a turn; no sentence kept: single-hop 0.658; any
            sentence: 0.696 at 1.51 events a turn.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        weights_path: Path | None = None,
        none_threshold: float = 0.5,
        told_threshold: float = 0.5,
    ):
        self.classifier = EmbeddingClassifier(
            embedder,
            weights_path or WEIGHTS_PATH,
            retrain_hint="python -m training.classifiers.fast_summarizer",
        )
        self.embedder = embedder
        self.none_threshold = none_threshold
        self.told_threshold = told_threshold

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

    def _told(self, sentence: str, type_probability: float) -> str | None:
        """A sentence without the first person ("The Wolves are solid this season."), kept as what
        the player said, when it is a statement of five words or more, not about the character,
        and its type is likely enough; None otherwise (most such sentences are chit-chat)."""
        if SAYS_YOU.search(sentence) or len(sentence.split()) < 5 or type_probability < self.told_threshold:
            return None
        sentence = to_third_person(sentence)  # only drops "honestly", "you know" and the like here
        first = sentence.split()[0]
        rest = sentence[len(first) :]
        return "The player said " + (first.lower() if first in _LOWER_FIRST else first) + rest

    async def summarize(self, turns: Sequence[Turn], *, npc_name: str | None = None) -> list[EventDraft]:
        """Drafts from the player's sentences in `turns`; NPC lines and chit-chat give none."""
        return self.summarize_sync(turns, npc_name=npc_name)

    def summarize_sync(self, turns: Sequence[Turn], *, npc_name: str | None = None) -> list[EventDraft]:
        said = [
            (restore_dropped_subject(s), t.at)
            for t in turns
            if t.role == "player"
            for s in split_sentences(t.text)
        ]
        drafts = []
        for (sentence, at), (label, p) in zip(said, self.classify([s for s, _ in said]), strict=True):
            if label == NONE or sentence.endswith("?") and label != EventType.SHARED_HISTORY:
                continue
            if not (_FIRST_PERSON.search(sentence) or sentence.lower().startswith("remember")):
                sentence = self._told(sentence, p)
                if sentence is None:
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
