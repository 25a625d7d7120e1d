"""An engine's answer to "can you serve now?" (`Generator.health`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineHealth:
    """Whether an engine can serve now.

    Attributes:
        ok: True when a request would be served.
        detail: what was checked, or what is wrong and what to do.
    """

    ok: bool
    detail: str = ""
