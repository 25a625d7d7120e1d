"""Every implementation satisfies the protocol it stands in for: each method the protocol
names exists, is async where the protocol's is, and takes the protocol's parameters (same
names, same kinds, no extra required ones). `isinstance` with a runtime-checkable protocol
checks names only; this checks signatures, so a protocol cannot drift from the code."""

import inspect
import re

import pytest
from fakes import FakeHashEmbedder

from companion.backbone.adapters import AdapterSet
from companion.backbone.hf_engine import HFBackbone
from companion.backbone.llamacpp_adapters import LlamaCppAdapters
from companion.backbone.llamacpp_engine import LlamaCppEngine
from companion.backbone.openai_engine import OpenAIAdapters, OpenAIEngine
from companion.buffer import InProcessBuffer, ShortTermBuffer
from companion.erasure import ErasureLog, InProcessErasureLog
from companion.memory_writer import InProcessMemoryWriter, MemoryWriter
from companion.protocols import AdapterRegistry, Generator
from companion.text_generator import BackboneTextGenerator
from memory.embedding import MiniLMEmbedder
from memory.fast_summarizer import FastSummarizer
from memory.generative_summarizer import GenerativeSummarizer
from memory.protocols import Embedder, MemoryStore, Summarizer, TextGenerator
from memory.store import ChromaMemoryStore
from server.rate_limit import InProcessRateLimiter, RateLimiter
from server.redis_memory_writer import RedisMemoryWriter
from server.redis_store import RedisBuffer, RedisErasureLog, RedisRateLimiter, RedisSessionStore
from server.sessions import InProcessSessionStore, SessionStore

CASES = [
    (Generator, [HFBackbone, LlamaCppEngine, OpenAIEngine]),
    (AdapterRegistry, [AdapterSet, LlamaCppAdapters, OpenAIAdapters]),
    (MemoryStore, [ChromaMemoryStore]),
    (MemoryWriter, [InProcessMemoryWriter, RedisMemoryWriter]),
    (Summarizer, [FastSummarizer, GenerativeSummarizer]),
    (Embedder, [MiniLMEmbedder, FakeHashEmbedder]),
    (TextGenerator, [BackboneTextGenerator]),
    (ShortTermBuffer, [InProcessBuffer, RedisBuffer]),
    (ErasureLog, [InProcessErasureLog, RedisErasureLog]),
    (SessionStore, [InProcessSessionStore, RedisSessionStore]),
    (RateLimiter, [InProcessRateLimiter, RedisRateLimiter]),
]


def _members(protocol) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


def _problems(protocol, cls) -> list[str]:
    problems = []
    for name, wanted in _members(protocol).items():
        found = inspect.getattr_static(cls, name, None)
        if found is None:
            problems.append(f"{name}: missing")
            continue
        if isinstance(wanted, property):
            continue
        if inspect.iscoroutinefunction(wanted) != inspect.iscoroutinefunction(found):
            problems.append(f"{name}: async in one, not in the other")
        if inspect.isasyncgenfunction(found) and not inspect.isasyncgenfunction(wanted):
            pass  # an async generator satisfies a method that returns an async iterator
        want, have = inspect.signature(wanted).parameters, inspect.signature(found).parameters
        for param in want.values():
            if param.name not in have and not any(p.kind is p.VAR_KEYWORD for p in have.values()):
                problems.append(f"{name}: no parameter {param.name!r}")
            elif param.name in have and have[param.name].kind != param.kind:
                problems.append(f"{name}: {param.name!r} is {have[param.name].kind}, wanted {param.kind}")
        for param in have.values():
            required = param.default is param.empty and param.kind not in (
                param.VAR_POSITIONAL,
                param.VAR_KEYWORD,
            )
            if required and param.name not in want:
                problems.append(f"{name}: extra required parameter {param.name!r}")
    for attribute in getattr(protocol, "__annotations__", {}):
        if not hasattr(cls, attribute) and attribute not in inspect.signature(cls.__init__).parameters:
            if attribute not in _instance_attributes(cls):
                problems.append(f"{attribute}: attribute missing")
    return problems


def _instance_attributes(cls) -> set[str]:
    """Names the class's methods assign on `self` (`self.x = ...`, `self.x: T = ...`)."""
    return set(re.findall(r"self\.(\w+)\s*(?::[^=\n]+)?=(?!=)", inspect.getsource(cls)))


@pytest.mark.parametrize(
    ("protocol", "cls"), [(p, c) for p, impls in CASES for c in impls], ids=lambda x: x.__name__
)
def test_the_implementation_satisfies_its_protocol(protocol, cls):
    assert _problems(protocol, cls) == []


def test_the_check_catches_a_drifted_implementation():
    class DriftedWriter:
        listeners: list = []

        async def submit(self, turns, *, player_id):  # npc_id and npc_name are gone
            pass

        def drain(self):  # not async
            pass

    problems = _problems(MemoryWriter, DriftedWriter)
    assert "submit: no parameter 'npc_id'" in problems
    assert "drain: async in one, not in the other" in problems
    assert "purge: missing" in problems
