"""Fakes that plug into the engine protocol (`companion.protocols.Generator`) the way a real engine does."""

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
