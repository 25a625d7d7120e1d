"""Shared fixtures: a network guard for the whole suite, tiny models, the real default model.

Tiny models are built from a config with random weights; they reuse the default
model's tokenizer, read from the local cache (provisioned once by `companion models
prepare`, which the test command runs first, or by the fixture below).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

NETGUARD = Path(__file__).parent / "netguard"
sys.path.insert(0, str(NETGUARD))
from companion_netguard import install as install_netguard  # noqa: E402

install_netguard()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never touch the user's memories: data goes to a directory of this run (children inherit it).
os.environ["COMPANION_DATA_DIR"] = tempfile.mkdtemp(prefix="companion-test-data-")


@pytest.fixture(scope="session")
def default_paths():
    """The provisioned default model (dense and MoE checkpoints in the cache)."""
    from companion.backbone.provision import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def tokenizer(default_paths):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_paths.moe_dir, local_files_only=True)


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for child processes: the same network guard, loaded via sitecustomize.
    Shared by every test: copy it (`{**subprocess_env, ...}`), never change it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="session")
def minilm():
    """The real local sentence embedder (all-MiniLM-L6-v2 from its PyPI package)."""
    from memory.embedding import MiniLMEmbedder

    return MiniLMEmbedder()


@pytest.fixture()
def embedded_store(tmp_path, minilm):
    """A real Chroma PersistentClient store in a fresh directory."""
    from memory.store import ChromaMemoryStore

    return ChromaMemoryStore.embedded(tmp_path / "chroma", minilm)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the session (skips without it, fails under CI=true)."""
    from services import RedisProcess

    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server):
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer):
    """A tiny random Mixtral saved as a transformers checkpoint with the default tokenizer,
    for server processes whose replies' wording is not the point (loads in a blink)."""
    from tiny_models import tiny_mixtral

    path = tmp_path_factory.mktemp("tiny-mixtral")
    tiny_mixtral().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
