"""Per-key rate limits: a fixed one-minute window per API key name."""

from __future__ import annotations

import time
from typing import Protocol


class RateLimiter(Protocol):
    async def hit(self, tenant: str) -> float | None:
        """Counts one message for `tenant`; None when allowed, else seconds until the window resets."""


class InProcessRateLimiter:
    def __init__(self, per_minute: int, clock=time.time):
        self.per_minute, self.clock = per_minute, clock
        self._windows: dict[str, tuple[int, int]] = {}

    async def hit(self, tenant: str) -> float | None:
        now = self.clock()
        window = int(now // 60)
        start, count = self._windows.get(tenant, (window, 0))
        count = count + 1 if start == window else 1
        self._windows[tenant] = (window, count)
        return None if count <= self.per_minute else 60 - (now % 60)
