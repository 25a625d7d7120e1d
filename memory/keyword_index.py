"""Keyword search over short texts: Okapi BM25, in process, no dependencies beyond numpy.

Sentence embeddings miss what keywords catch: names ("Pepper"), rare nouns ("asthma"),
numbers. Retrieval takes candidates from both (memory/queries.py). Terms are lower-cased
words with a crude suffix stem ("paintings", "painted" -> "paint"); common function words
are dropped.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = frozenset(
    """a an the and or but if of to in on at for with about from by as into than then so too very
    is are was were be been being am do does did done have has had having will would shall should can
    could may might must i me my mine myself you your yours yourself he him his she her hers it its
    we us our ours they them their theirs this that these those there here what which who whom whose
    when where why how all any both each few more most other some such no nor not only own same just
    also up down out over again once player npc s t don didn doesn isn wasn aren weren""".split()
)
_SUFFIXES = ("ingly", "edly", "ings", "ing", "ies", "ied", "ed", "es", "s")


def terms(text: str) -> list[str]:
    """The index terms of `text`, in order (repeats kept: BM25 counts them)."""
    out = []
    for word in _WORD.findall(text.lower()):
        word = word.split("'")[0]
        if word in _STOP or len(word) < 2:
            continue
        out.append(stem(word))
    return out


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                word += "y"
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # "planned" -> "plann" -> "plan"
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]  # "hike" and "hiking" -> "hik"
    return word


class KeywordIndex:
    """BM25 over a fixed list of texts; `scores(query)` is one score per text (0 = no term shared).

    Args:
        texts: the documents, in the order scores are returned.
        k1, b: the usual BM25 saturation and length-normalisation constants.
    """

    def __init__(self, texts: Sequence[str], *, k1: float = 1.2, b: float = 0.75):
        self.n = len(texts)
        self.k1, self.b = k1, b
        docs = [Counter(terms(t)) for t in texts]
        lengths = np.asarray([sum(d.values()) for d in docs], dtype=np.float32)
        self._norm = k1 * (1 - b + b * lengths / max(float(lengths.mean()) if self.n else 1.0, 1e-6))
        self._postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, doc in enumerate(docs):
            for term, tf in doc.items():
                self._postings[term].append((i, tf))

    def idf(self, term: str) -> float:
        df = len(self._postings.get(term, ()))
        return math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(self.n, dtype=np.float32)
        for term in set(terms(query)):
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = self.idf(term)
            for i, tf in postings:
                out[i] += idf * tf * (self.k1 + 1) / (tf + self._norm[i])
        return out

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """The k best (index, score) pairs with a score above 0, best first."""
        scores = self.scores(query)
        best = np.argsort(-scores)[:k]
        return [(int(i), float(scores[i])) for i in best if scores[i] > 0]
