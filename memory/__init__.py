"""Long-term memory: typed events extracted from dialogue, stored per player in Chroma.

Knows no language model and no server: the generative summarizer receives a model
through the small `TextGenerator` protocol.
"""

from memory.events import EVENT_TYPES, EventType, MemoryEvent, ScoredEvent, Turn
from memory.protocols import Embedder, MemoryStore, Summarizer, TextGenerator

__all__ = [
    "EVENT_TYPES",
    "Embedder",
    "EventType",
    "MemoryEvent",
    "MemoryStore",
    "ScoredEvent",
    "Summarizer",
    "TextGenerator",
    "Turn",
]
