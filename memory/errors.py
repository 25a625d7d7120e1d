"""Named exceptions of the `memory` package."""


class MemoryLayerError(Exception):
    """Base class of every error this package raises on purpose."""


class StoreUnavailableError(MemoryLayerError):
    """The Chroma store could not be reached or opened."""


class EmbedderUnavailableError(MemoryLayerError):
    """The local sentence-embedding model is not installed."""


class SummarizerWeightsError(MemoryLayerError):
    """The fast summarizer's weights are missing or do not fit the embedder."""
