"""The protocols the turn pipeline is built from.

An engine (`Generator`) is what the pipeline calls to speak: `HFBackbone` (transformers +
peft, the reference), `LlamaCppEngine` (llama.cpp in-process, continuous batching) and
`OpenAIEngine` (any OpenAI-compatible server) each satisfy it; tests plug in scripted fakes
the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from companion.backbone.config import GenerationParams
from companion.backbone.health import EngineHealth
from companion.backbone.routing import RoutingStats
from companion.backbone.streaming import GenerationSummary

__all__ = ["AdapterRegistry", "EngineHealth", "Generator"]


@runtime_checkable
class AdapterRegistry(Protocol):
    """The persona adapters an engine can apply, by name (a persona's id)."""

    def load(self, name: str, path: str | Path) -> None:
        """Loads the adapter stored at `path` under `name`.

        Raises:
            AdapterError: the name is taken, nothing loadable is there, it does not fit
                the model, or this engine cannot load adapters itself.
        """
        ...

    def has(self, name: str) -> bool:
        """True when requests may name this adapter."""
        ...

    def names(self) -> list[str]:
        """The adapters requests may name."""
        ...


@runtime_checkable
class Generator(Protocol):
    """An engine: streams a reply as text deltas, with a persona's adapter active (None: the bare model).

    Stopping iteration (break, `aclose()`, task cancellation) stops the work for that
    reply, including prompt processing not yet done. `summary` is filled as it runs
    (tokens, timings, finish reason); `routing_stats` (experts per token) only by engines
    that can see routing (`hf`).

    Attributes:
        kind: the engine's name: "hf", "llamacpp", "openai", or a fake's.
        adapters: the persona adapters it can apply.
    """

    kind: str
    adapters: AdapterRegistry

    def stream(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        adapter: str | None = None,
        params: GenerationParams | None = None,
        summary: GenerationSummary | None = None,
        routing_stats: RoutingStats | None = None,
    ) -> AsyncIterator[str]:
        """Raises (while iterating): AdapterError for an adapter not loaded,
        EngineUnavailableError when the engine cannot serve now (transient),
        GenerationFailedError when the model failed on this request."""
        ...

    def warm(self, prefixes: Sequence[tuple[Sequence[Mapping[str, str]], str | None]]) -> None:
        """Prepares for prompts that begin with these (messages, adapter) prefixes, e.g. each
        persona's system prompt; engines without a prefix cache do nothing. Blocks until
        done: call it before taking traffic."""
        ...

    def info(self) -> dict[str, Any]:
        """What serves: engine, model source, architecture, adapters; JSON-ready."""
        ...

    async def health(self) -> EngineHealth:
        """Whether a request would be served now; cheap enough for every /health call."""
        ...

    def close(self) -> None:
        """Frees the model and stops workers; the engine is unusable afterwards."""
        ...
