"""The openai engine against a real llama.cpp server (llama-server) on loopback, serving the default
model's GGUF with two persona LoRAs; and the WebSocket server on it when that engine dies and returns."""

import asyncio

import pytest
from fastapi.testclient import TestClient
from services import LlamaServerProcess

from companion.backbone import GenerationParams
from companion.backbone.openai_engine import OpenAIEngine, OpenAIEngineConfig
from companion.backbone.provision import default_model_paths
from companion.errors import AdapterError, ConfigError, EngineUnavailableError
from companion.prompting import build_messages
from persona_adapters import PersonaRegistry
from server import ServerSettings, create_app

pytestmark = pytest.mark.slow
GREEDY = GenerationParams(max_new_tokens=20, temperature=0.0, repetition_penalty=1.0)
KEY = "studio-key-123"


@pytest.fixture(scope="module")
def llama_server(default_paths, tmp_path_factory):
    paths = default_model_paths()
    # f16 weights: llama-server's q8_0 kernels round differently for different batch shapes, so
    # greedy replies under concurrency can drift from the same request alone; f16 does not.
    gguf = paths.moe_gguf("f16")
    converted = {
        p.name.rsplit("-", 1)[0]: p for p in (paths.moe_dir.parents[1] / "adapters-gguf").glob("*.gguf")
    }
    if not gguf.is_file() or not {"mira", "orla"} <= set(converted):
        pytest.fail(
            "the default GGUF and the personas' GGUF LoRAs are missing; run `companion models prepare`"
        )
    server = LlamaServerProcess(
        gguf, {p: converted[p] for p in ("mira", "orla")}, tmp_path_factory.mktemp("ls")
    )
    server.start()
    yield server
    server.kill()


def _engine(server, **overrides):
    return OpenAIEngine.from_config(OpenAIEngineConfig(base_url=server.base_url, retries=1, **overrides))


def _messages(persona, line):
    return build_messages(PersonaRegistry.default().get(persona), [], line)


def test_personas_map_to_the_servers_loras_and_replies_stream(llama_server):
    engine = _engine(llama_server)
    assert {"mira", "orla"} <= set(engine.adapters.names())
    assert asyncio.run(engine.health()).ok
    deltas = asyncio.run(
        _collect(engine.stream(_messages("mira", "Good evening!"), adapter="mira", params=GREEDY))
    )
    assert len(deltas) > 1 and "".join(deltas).strip()
    with pytest.raises(AdapterError, match="marlowe"):
        asyncio.run(engine.generate("hi", adapter="marlowe", params=GREEDY))


def test_mixed_personas_at_once_equal_each_persona_alone(llama_server):
    engine = _engine(llama_server)
    jobs = [
        ("mira", "What's good tonight?"),
        ("orla", "Is the reactor safe?"),
        (None, "Hello there."),
        ("orla", "What's good tonight?"),
        ("mira", "Is the reactor safe?"),
    ]

    async def together():
        return await asyncio.gather(
            *[engine.generate(_messages(p or "mira", line), adapter=p, params=GREEDY) for p, line in jobs]
        )

    concurrent = asyncio.run(together())
    alone = [
        asyncio.run(engine.generate(_messages(p or "mira", line), adapter=p, params=GREEDY))
        for p, line in jobs
    ]
    assert concurrent == alone
    assert concurrent[1] != asyncio.run(
        engine.generate(_messages("orla", "Is the reactor safe?"), adapter="mira", params=GREEDY)
    )  # the LoRA is applied


def test_a_dead_server_is_engine_unavailable_and_the_websocket_says_so_until_it_returns(
    llama_server, tmp_path
):
    engine = _engine(llama_server, timeout_s=10)
    settings = ServerSettings(data_dir=tmp_path, api_keys=f"studio:{KEY}", demo=False)
    with TestClient(create_app(settings, backbone=engine)) as client:
        assert client.get("/health").json()["engine_status"] == "ok"
        llama_server.kill()
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["engine_status"].startswith("unavailable")
        with pytest.raises(EngineUnavailableError, match="unreachable"):
            asyncio.run(engine.generate("hi", params=GREEDY))
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_json({"type": "hello", "token": KEY, "player_id": "p1", "npc_id": "mira"})
            assert ws.receive_json()["type"] == "ready"
            ws.send_json({"type": "say", "id": "m1", "text": "Good evening!"})
            error = ws.receive_json()
            assert error["type"] == "error" and error["code"] == "engine_unavailable", error
            llama_server.start()  # the engine comes back on the same port
            assert client.get("/health").status_code == 200
            ws.send_json({"type": "say", "id": "m2", "text": "Good evening!"})
            frames = []
            while not frames or frames[-1]["type"] not in ("reply", "error"):
                frames.append(ws.receive_json())
            assert frames[-1]["type"] == "reply" and any(f["type"] == "token" for f in frames), frames[-1]


def test_an_unreachable_url_fails_fast_with_a_clear_message():
    engine = OpenAIEngine(
        OpenAIEngineConfig(base_url="http://127.0.0.1:9/v1", retries=0, connect_timeout_s=1)
    )
    with pytest.raises(EngineUnavailableError, match="COMPANION_OPENAI_BASE_URL"):
        asyncio.run(engine.generate("hi", params=GREEDY))
    assert not asyncio.run(engine.health()).ok
    with pytest.raises(ConfigError, match="http"):
        OpenAIEngineConfig(base_url="ftp://nowhere")


async def _collect(stream):
    return [delta async for delta in stream]
