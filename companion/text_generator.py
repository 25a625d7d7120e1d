"""The backbone seen as `memory.TextGenerator`, so the generative summarizer can use it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from companion.backbone import GenerationParams, HFBackbone


class BackboneTextGenerator:
    """Greedy completions from an `HFBackbone`, with an optional adapter.

    Args:
        backbone: the loaded backbone.
        repetition_penalty: small models loop without one.
    """

    def __init__(self, backbone: HFBackbone, *, repetition_penalty: float = 1.05):
        self.backbone = backbone
        self.repetition_penalty = repetition_penalty

    async def complete(
        self, messages: Sequence[Mapping[str, str]], *, adapter: str | None = None, max_new_tokens: int = 256
    ) -> str:
        params = GenerationParams(
            max_new_tokens=max_new_tokens, temperature=0, repetition_penalty=self.repetition_penalty
        )
        return await self.backbone.generate(list(messages), adapter=adapter, params=params)
