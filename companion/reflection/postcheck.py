"""Checking a draft reply before the player sees it.

Breaking character is a fixed set of phrases (what an assistant says about itself is
formulaic); the memory checks compare meanings with the embedder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from companion.reflection.decision import Decision, Flag, PostCheck
from memory.events import MemoryEvent
from memory.protocols import Embedder
from memory.retrieval import fact_key

BREAKS_CHARACTER = re.compile(
    r"\b(as an ai|an ai( language)? model|a language model|i am an ai|i'm an ai|"
    r"(as|i am|i'm) an artificial intelligence|openai|"
    r"chatgpt|as a (virtual|digital) assistant|i'm (just )?a (chat)?bot|i am (just )?a (chat)?bot|"
    r"i (don't|do not) have (personal )?(feelings|experiences|a body|emotions)|my training data|"
    r"i cannot browse|i was trained|as an assistant)\b",
    re.IGNORECASE,
)
MEMORY_CLAIM = re.compile(
    r"\b(you (told|said|mentioned|were saying)|didn't you (say|tell|mention)|you've (told|said|mentioned)|"
    r"i remember (you|that you|when you)|last time you|you once said)\b(?P<claim>[^.!?]*)",
    re.IGNORECASE,
)
NOT_KNOWING = re.compile(
    r"\b(never heard|haven't heard|have not heard|don't know|do not know|no idea|not sure what|what'?s (a|an|that)|"
    r"what is (a|an|that)|strange (word|thing|name)|can't say i know|never seen|not from around)\b",
    re.IGNORECASE,
)
BUT_EXPLAINS = re.compile(
    r"\bbut\s+(?P<clause>(i can tell you|(they|it|those|these)('s|'re|\s+(are|is|were|was|can|have|has|used)\b))"
    r"[^.!?]*[.!?]?)",
    re.IGNORECASE,
)  # "I don't know what smartphones are, but they can be found everywhere!"
_NEGATION = re.compile(r"\b(not|no|never|n't|don't|doesn't|isn't|aren't|can't|cannot|won't|without)\b", re.I)
_STOP = frozenset(
    "the a an and or but of to in on at for with about from that this it is are was were be been has have had "
    "player player's their they them you your i me my we our he she his her its there here what which who when "
    "very really just so too also some any all not".split()
)


def plain_quotes(text: str) -> str:
    """Typographic apostrophes and quotes as plain ones ("don\u2019t" -> "don't"): models write both."""
    return text.translate(_PLAIN_QUOTES)


_PLAIN_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def _claims(draft: str) -> list[str]:
    """What the draft says the player told (after "you told me", "I remember you ..."), two words or more."""
    claims = [m.group("claim").strip(" ,") for m in MEMORY_CLAIM.finditer(draft)]
    return [c for c in claims if len(c.split()) >= 2]


def _explains_anyway(draft: str) -> str | None:
    """A "but they are ..." after not knowing, that neither negates nor asks (None: none)."""
    for match in BUT_EXPLAINS.finditer(draft):
        clause = match.group("clause").strip()
        if not _NEGATION.search(clause) and not clause.endswith("?"):
            return clause
    return None


def draft_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 3]


def content_words(text: str) -> set[str]:
    """Lower-cased words of four letters or more, cut to five letters (a crude stem)."""
    return {w[:5] for w in re.findall(r"[a-z']+", text.lower()) if len(w) >= 4 and w not in _STOP}


class PostChecker:
    """Finds problems in a draft.

    Args:
        embedder: sentence embeddings for the memory checks.
        max_words: longer drafts are flagged.
        claim_similarity: a claimed memory must be this close to something the player said or a stored fact.
        recall_similarity: a chosen recall counts as used above this similarity (or by shared words).
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_words: int = 90,
        claim_similarity: float = 0.45,
        recall_similarity: float = 0.4,
    ):
        self.embedder = embedder
        self.max_words = max_words
        self.claim_similarity = claim_similarity
        self.recall_similarity = recall_similarity

    def memory_queries(self, draft: str) -> list[str]:
        """What to look up in memory before checking `draft`: its memory claims and sentences.

        The memory checks compare each claim and sentence with the stored facts nearest to
        it, so the facts found for these texts (plus what was recalled) are all they need:
        the turn does not read the player's whole collection.
        """
        return _claims(draft) + draft_sentences(draft) or [draft]

    def check(
        self,
        draft: str,
        *,
        decision: Decision,
        known: Sequence[MemoryEvent],
        player_lines: Sequence[str] = (),
    ) -> PostCheck:
        """All flags for `draft`.

        Args:
            draft: the reply to check.
            decision: what reflection decided before the reply.
            known: the player's stored events near the draft (active and superseded, with what
                replaced them: `MemoryStore.related(memory_queries(draft))`) and the recalled ones.
            player_lines: what the player said in this conversation (not yet summarized).
        """
        draft = plain_quotes(draft)
        flags: list[Flag] = []
        if match := BREAKS_CHARACTER.search(draft):
            flags.append(Flag(kind="breaks_character", detail=f"says {match.group(0)!r}"))
        flags += self._invented(draft, known, player_lines)
        flags += self._contradictions(draft, known)
        flags += self._ignored_recall(draft, decision)
        if decision.refused and not NOT_KNOWING.search(draft):
            flags.append(
                Flag(kind="answered_out_of_domain", detail=f"does not refuse {decision.refuse_topic!r}")
            )
        elif decision.refused and (explains := _explains_anyway(draft)):
            flags.append(
                Flag(kind="answered_out_of_domain", detail=f"says it does not know, but {explains!r}")
            )
        if len(draft.split()) > self.max_words:
            flags.append(Flag(kind="too_long", detail=f"{len(draft.split())} words, limit {self.max_words}"))
        return PostCheck(flags=flags)

    def _invented(self, draft: str, known: Sequence[MemoryEvent], player_lines: Sequence[str]) -> list[Flag]:
        claims = _claims(draft)
        if not claims:
            return []
        sources = [fact_key(e.content) for e in known if e.active] + list(player_lines)
        if not sources:
            return [Flag(kind="invented_memory", detail=f"claims {c!r} but nothing was told") for c in claims]
        claim_vectors = np.asarray(self.embedder.embed(claims), dtype=np.float32)
        source_vectors = np.asarray(self.embedder.embed(sources), dtype=np.float32)
        best = (claim_vectors @ source_vectors.T).max(axis=1)  # (n_claims,)
        return [
            Flag(kind="invented_memory", detail=f"claims {claim!r}, closest known fact at {sim:.2f}")
            for claim, sim in zip(claims, best, strict=True)
            if sim < self.claim_similarity
        ]

    def _contradictions(self, draft: str, known: Sequence[MemoryEvent]) -> list[Flag]:
        """A draft that states a superseded fact's distinctive detail, or negates an active fact."""
        flags = []
        by_id = {e.id: e for e in known}
        draft_words = content_words(draft)
        for old in known:
            new = by_id.get(old.superseded_by or "")
            if new is None:
                continue
            stale = content_words(old.content) - content_words(new.content)
            if stale & draft_words:
                flags.append(
                    Flag(
                        kind="contradicts_memory", detail=f"uses {old.content!r}, replaced by {new.content!r}"
                    )
                )
        active = [e for e in known if e.active]
        sentences = draft_sentences(draft)
        if active and sentences:
            sims = (
                np.asarray(self.embedder.embed(sentences), dtype=np.float32)
                @ np.asarray(self.embedder.embed([fact_key(e.content) for e in active]), dtype=np.float32).T
            )  # (n_sentences, n_events)
            for i, j in zip(*np.nonzero(sims >= 0.7), strict=True):
                if bool(_NEGATION.search(sentences[i])) != bool(_NEGATION.search(active[j].content)):
                    flags.append(
                        Flag(kind="contradicts_memory", detail=f"{sentences[i]!r} vs {active[j].content!r}")
                    )
        return flags

    def _ignored_recall(self, draft: str, decision: Decision) -> list[Flag]:
        if not decision.recall:
            return []
        choice = decision.recall[0]
        if content_words(fact_key(choice.content)) & content_words(draft):
            return []
        vectors = np.asarray(self.embedder.embed([draft, fact_key(choice.content)]), dtype=np.float32)
        if float(vectors[0] @ vectors[1]) >= self.recall_similarity:
            return []
        return [Flag(kind="ignored_recall", detail=f"does not bring up {choice.content!r}")]
