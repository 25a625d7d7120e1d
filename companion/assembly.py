"""Builds the whole turn pipeline from its parts: one place, used by the CLI and the server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from companion.backbone import BackboneConfig, GenerationParams, HFBackbone
from companion.buffer import InProcessBuffer, ShortTermBuffer
from companion.erasure import ErasureLog, InProcessErasureLog
from companion.memory_writer import InProcessMemoryWriter, MemoryWriter
from companion.pipeline import TurnPipeline
from companion.protocols import Generator
from companion.reflection import Reflector
from memory.embedding import MiniLMEmbedder
from memory.fast_summarizer import FastSummarizer
from memory.protocols import MemoryStore
from memory.store import ChromaMemoryStore
from persona_adapters import PersonaRegistry


@dataclass
class Companion:
    """The loaded parts and the pipeline that joins them."""

    backbone: HFBackbone | Generator
    store: MemoryStore
    buffer: ShortTermBuffer
    writer: MemoryWriter
    pipeline: TurnPipeline
    personas: PersonaRegistry
    erasures: ErasureLog

    @classmethod
    def build(
        cls,
        backbone_config: BackboneConfig | None = None,
        *,
        data_dir: str | Path,
        chroma_url: str | None = None,
        params: GenerationParams | None = None,
        buffer: ShortTermBuffer | None = None,
        writer_of: Callable[[FastSummarizer, ChromaMemoryStore, ErasureLog], MemoryWriter] | None = None,
        backbone: Generator | None = None,
        erasures: ErasureLog | None = None,
    ) -> Companion:
        """Loads the backbone and the embedder, opens the memory store, wires the pipeline.

        Args:
            backbone_config: which model; the offline default when None.
            data_dir: where the embedded memory store (memory/) and user personas (personas/) live.
            chroma_url: a Chroma server instead of the embedded store.
            params: decoding settings for replies.
            buffer: a short-term buffer; in-process when None.
            writer_of: builds the memory writer from the summarizer, the store and the
                erasure log; an in-process writer when None.
            backbone: an already built generator (a test's fake, a shared backbone);
                `backbone_config` is then ignored.
            erasures: the log of hard deletes (Redis-backed in a server with Redis);
                in-process when None.
        """
        if backbone is not None and backbone.kind != "hf":
            # torch only embeds short sentences here; its default of one thread per core would
            # fight the engine's own threads for the same cores (measured: 58 -> 89 tokens/s
            # at 20 players on llamacpp, 2 cores).
            torch.set_num_threads(1)
        embedder = MiniLMEmbedder()
        store = (
            ChromaMemoryStore.remote(chroma_url, embedder)
            if chroma_url
            else ChromaMemoryStore.embedded(Path(data_dir) / "memory", embedder)
        )
        backbone = backbone if backbone is not None else HFBackbone.from_config(backbone_config)
        buffer = buffer or InProcessBuffer()
        erasures = erasures or InProcessErasureLog()
        writer = (writer_of or InProcessMemoryWriter)(FastSummarizer(embedder), store, erasures)
        personas = PersonaRegistry.default(data_dir)
        reflector = Reflector(embedder)
        reflector.warm(personas.all())
        store.warm()
        pipeline = TurnPipeline(
            backbone,
            store,
            reflector,
            buffer,
            writer,
            personas.get,
            params=params,
            adapter_dir_of=personas.adapter_dir,
            erasures=erasures,
        )
        pipeline.warm(personas.all())
        return cls(backbone, store, buffer, writer, pipeline, personas, erasures)

    async def close(self) -> None:
        await self.writer.drain()
        if callable(getattr(self.backbone, "close", None)):
            self.backbone.close()
