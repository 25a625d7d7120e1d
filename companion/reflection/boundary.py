"""The knowledge boundary: is the player asking about something this character cannot know?

A medieval innkeeper asked about smartphones refuses in character; asked about the
weather, the stew or the player's day, she answers. Two signals, on questions only:
the question names one of the persona's out-of-world things (word match, plurals
included), or it is, in embedding space, clearly closer to those things than to the
persona's knowledge domain and ordinary small talk. A named thing is not refused when
the question is very close to the domain anyway (an innkeeper asked about "the train
of her dress" is still talking about clothes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from memory.protocols import Embedder
from persona_adapters import Persona

_QUESTION = re.compile(
    r"\?|^(what|who|how|why|where|when|which|can you|could you|would you|tell me|explain|do you know|"
    r"have you (ever )?heard|is there|are there|do you (use|have|own|like))\b",
    re.IGNORECASE,
)
SMALL_TALK = (
    "How are you today?",
    "What's your name?",
    "Tell me about yourself.",
    "What do you think of me?",
    "What's good to eat here?",
    "How's business?",
    "Do you have family?",
    "What do you like to do for fun?",
    "Can I get a drink?",
    "What's the weather like?",
    "Do you remember what I told you?",
    "What should I do about my problem?",
)


@dataclass(frozen=True)
class BoundaryCheck:
    """Whether a line asks about something outside the persona's knowledge.

    Attributes:
        out_of_domain: True when the persona should refuse in character.
        topic: the closest out-of-domain topic.
        refuse_similarity: similarity to that topic.
        domain_similarity: similarity to the best in-domain or small-talk prototype.
    """

    out_of_domain: bool
    topic: str | None
    refuse_similarity: float
    domain_similarity: float


class KnowledgeBoundary:
    """Decides refusals from the persona's `knowledge_domain` and `must_refuse` topics.

    Args:
        embedder: sentence embeddings.
        min_similarity: a question must be at least this close to a refused topic.
        margin: ...and this much closer to it than to anything in-domain.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        min_similarity: float = 0.45,
        margin: float = 0.05,
        domain_override: float = 0.6,
    ):
        self.embedder = embedder
        self.min_similarity = min_similarity
        self.margin = margin
        self.domain_override = domain_override
        self._prototypes: dict[str, _Prototypes] = {}

    def check(self, text: str, persona: Persona) -> BoundaryCheck:
        if not persona.must_refuse or not _QUESTION.search(text.strip()):
            return BoundaryCheck(False, None, 0.0, 0.0)
        protos = self._for(persona)
        query = np.asarray(self.embedder.embed([text])[0], dtype=np.float32)
        refuse_sims = protos.refuse @ query  # (n_refuse_prototypes,)
        best = int(refuse_sims.argmax())
        refuse_sim, domain_sim = float(refuse_sims[best]), float((protos.domain @ query).max())
        named = next((topic for topic, pattern in protos.names if pattern.search(text)), None)
        if named is not None and domain_sim < self.domain_override:
            return BoundaryCheck(True, named, max(refuse_sim, self.min_similarity), domain_sim)
        out = refuse_sim >= self.min_similarity and refuse_sim > domain_sim + self.margin
        return BoundaryCheck(out, protos.topics[best], refuse_sim, domain_sim)

    def _for(self, persona: Persona) -> _Prototypes:
        key = f"{persona.id}\x1f{persona.knowledge_domain}\x1f{'|'.join(persona.must_refuse)}"
        if key not in self._prototypes:
            refuse_texts, topics, names = [], [], []
            for topic in persona.must_refuse:
                for item in _items(topic):
                    stem = item[:-1] if item.endswith("s") and not item.endswith("ss") else item
                    names.append((topic, re.compile(rf"\b{re.escape(stem)}(s|es)?\b", re.IGNORECASE)))
                    for text in (
                        item,
                        f"What's the best {item}?",
                        f"Tell me about {item}.",
                        f"Do you use {item}?",
                    ):
                        refuse_texts.append(text)
                        topics.append(topic)
            items = _items(persona.knowledge_domain)
            domain_texts = [*SMALL_TALK, *items, *(f"Tell me about {i}." for i in items)]
            self._prototypes[key] = _Prototypes(
                refuse=np.asarray(self.embedder.embed(refuse_texts), dtype=np.float32),
                topics=topics,
                domain=np.asarray(self.embedder.embed(domain_texts), dtype=np.float32),
                names=names,
            )
        return self._prototypes[key]


@dataclass(frozen=True)
class _Prototypes:
    refuse: np.ndarray  # (n_refuse_prototypes, dim)
    topics: list[str]  # the must_refuse entry of each refuse prototype
    domain: np.ndarray  # (n_domain_prototypes, dim)
    names: list[tuple[str, re.Pattern]]  # (must_refuse entry, pattern naming one of its items)


def _items(phrase: str) -> list[str]:
    """'software, programming and code' -> ['software', 'programming', 'code']."""
    parts = re.split(r"[,;:]|\band\b|\bor\b|\blike\b", phrase)
    return [p.strip() for p in parts if len(p.strip()) >= 2]
