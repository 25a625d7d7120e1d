"""Fakes for unit tests: engines that plug into `companion.protocols.Generator` the way a real
engine does, and an embedder for tests where meaning is not the point."""

import hashlib
import math
from collections.abc import Sequence

from companion.backbone.health import EngineHealth
from companion.errors import AdapterError


class FakeNoAdapters:
    """An AdapterRegistry with nothing loaded that refuses to load anything (no model to put it on)."""

    def load(self, name, path):
        raise AdapterError(f"the fake engine has no model to load {path} onto")

    def has(self, name):
        return False

    def names(self):
        return []


class FakeEngineBase:
    """What every fake engine shares: a kind, no adapters, info, health, close."""

    kind = "fake"
    healthy = True

    @property
    def adapters(self):
        return FakeNoAdapters()

    def info(self):
        return {"engine": self.kind, "source": "scripted"}

    async def health(self):
        return EngineHealth(ok=self.healthy, detail="scripted")

    def warm(self, prefixes):
        pass

    def close(self):
        pass


class FakeHashEmbedder:
    """A deterministic bag-of-words embedder for unit tests where meaning is not the point.

    Texts sharing words get similar vectors; no model is loaded.
    """

    def __init__(self, dimension: int = 64) -> None:
        self.dimension = dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vector = [0.0] * self.dimension
            for word in text.lower().split():
                digest = hashlib.sha256(word.strip(".,!?'\"").encode()).digest()
                vector[int.from_bytes(digest[:4], "little") % self.dimension] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            out.append([v / norm for v in vector])
        return out

    def forget_texts(self, texts: Sequence[str] | None = None) -> None:
        """Nothing is cached."""
