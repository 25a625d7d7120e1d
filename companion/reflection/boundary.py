"""The persona author's own list of out-of-world things: `must_refuse`, matched word for word.

The learned strategy model (`strategy.py`) judges out-of-world requests against the setting as a
whole; this adds the things an author named, so that a card's list is always honoured. A named
thing is not refused when the question is very close to the persona's knowledge domain anyway
(an innkeeper asked about "the train of her dress" is still talking about clothes), and only
questions and requests are refused, not statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from memory.protocols import Embedder
from persona_adapters import Persona

_QUESTION = re.compile(
    r"\?|^(what|who|how|why|where|when|which|can you|could you|would you|tell me|explain|do you know|"
    r"have you (ever )?heard|is there|are there|do you (use|have|own|like)|let's|let us)\b",
    re.IGNORECASE,
)


class KnowledgeBoundary:
    """Finds which of a persona's `must_refuse` entries a question names, if any.

    Args:
        embedder: sentence embeddings, for the domain override.
        domain_override: a question at least this close to the knowledge domain is not refused.
    """

    def __init__(self, embedder: Embedder, *, domain_override: float = 0.6):
        self.embedder = embedder
        self.domain_override = domain_override
        self._prototypes: dict[str, _Prototypes] = {}

    def named(self, text: str, persona: Persona) -> str | None:
        """The `must_refuse` entry the question names (None: none, or not a question)."""
        if not persona.must_refuse or not _QUESTION.search(text.strip()):
            return None
        protos = self._for(persona)
        named = next((topic for topic, pattern in protos.names if pattern.search(text)), None)
        if named is None:
            return None
        query = np.asarray(self.embedder.embed([text])[0], dtype=np.float32)
        return named if float((protos.domain @ query).max()) < self.domain_override else None

    def warm(self, persona: Persona) -> None:
        """Embeds the persona's domain now, not on the first player's turn."""
        if persona.must_refuse:
            self._for(persona)

    def _for(self, persona: Persona) -> _Prototypes:
        key = f"{persona.id}\x1f{persona.knowledge_domain}\x1f{'|'.join(persona.must_refuse)}"
        if key not in self._prototypes:
            names = []
            for topic in persona.must_refuse:
                for item in _items(topic):
                    stem = item[:-1] if item.endswith("s") and not item.endswith("ss") else item
                    names.append((topic, re.compile(rf"\b{re.escape(stem)}(s|es)?\b", re.IGNORECASE)))
            items = _items(persona.knowledge_domain) or [persona.name]
            domain_texts = [*items, *(f"Tell me about {i}." for i in items)]
            self._prototypes[key] = _Prototypes(
                domain=np.asarray(self.embedder.embed(domain_texts), dtype=np.float32), names=names
            )
        return self._prototypes[key]


@dataclass(frozen=True)
class _Prototypes:
    domain: np.ndarray  # (n_domain_prototypes, dim)
    names: list[tuple[str, re.Pattern]]  # (must_refuse entry, pattern naming one of its items)


def _items(phrase: str) -> list[str]:
    """'software, programming and code' -> ['software', 'programming', 'code']."""
    parts = re.split(r"[,;:]|\band\b|\bor\b|\blike\b", phrase)
    return [p.strip() for p in parts if len(p.strip()) >= 2]
