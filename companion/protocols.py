"""The protocols the turn pipeline is built from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from companion.backbone.config import GenerationParams
from companion.backbone.routing import RoutingStats
from companion.backbone.streaming import GenerationSummary


class Generator(Protocol):
    """Streams a reply as text deltas, with a persona's adapter active (None: the bare backbone).

    `HFBackbone` is one; stopping iteration stops the generation. `summary` and
    `routing_stats` (experts per token, for MoE backbones) are filled as it runs.
    """

    def stream(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        adapter: str | None = None,
        params: GenerationParams | None = None,
        summary: GenerationSummary | None = None,
        routing_stats: RoutingStats | None = None,
    ) -> AsyncIterator[str]: ...
