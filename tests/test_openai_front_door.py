"""The OpenAI-compatible front door: `/v1/chat/completions` and `/v1/models`.

In-process with a scripted fake engine for the wire details (a revised draft, the error
shapes); against a real server process with the official `openai` SDK as the client for
streaming, non-streaming and memory across two turns.
"""

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from services import ServerProcess
from test_pipeline import FakeScriptedGenerator
from test_server_protocol import AUTH_A, KEY_A, _app


def _chat(client, body, headers=AUTH_A):
    return client.post("/v1/chat/completions", json=body, headers=headers)


def _sse(response) -> list:
    lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_a_revised_draft_is_not_streamed_twice_and_the_last_chunk_holds_the_final_text(tmp_path):
    broken = "As an AI language model, I cannot taste stew."
    good = "Stew's on the fire, love. Sit down."
    with TestClient(_app(tmp_path, FakeScriptedGenerator(broken, good, "Sit, love."))) as client:
        body = {"model": "mira", "user": "p1", "messages": [{"role": "user", "content": "Any stew?"}]}
        chunks = _sse(_chat(client, {**body, "stream": True, "stream_options": {"include_usage": True}}))
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert good not in streamed and streamed.startswith("As an AI")  # only the first draft streamed
        last = [c for c in chunks if c["choices"]][-1]
        assert last["choices"][0]["finish_reason"] == "stop"
        assert last["companion"]["revised"] is True and last["companion"]["text"] == good
        assert last["companion"]["regenerated"] is True
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0

        plain = _chat(client, {**body, "messages": [{"role": "user", "content": "And bread?"}]})
        assert plain.status_code == 200
        completion = plain.json()
        assert completion["object"] == "chat.completion" and completion["model"] == "mira"
        assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Sit, love."}
        assert completion["companion"]["strategy"] and completion["companion"]["regenerated"] is False
        history = client.get("/v1/players/p1/memories", headers=AUTH_A)
        assert history.status_code == 200


@pytest.mark.parametrize(
    "body, headers, status, code",
    [
        ({"model": "mira", "user": "p1", "messages": [{"role": "user", "content": "hi"}]},
         {"Authorization": "Bearer wrong"}, 401, "invalid_api_key"),
        ({"model": "nobody", "user": "p1", "messages": [{"role": "user", "content": "hi"}]},
         AUTH_A, 404, "model_not_found"),
        ({"model": "mira", "messages": [{"role": "user", "content": "hi"}]}, AUTH_A, 400, "missing_user"),
        ({"model": "mira", "user": "p 1/..", "messages": [{"role": "user", "content": "hi"}]},
         AUTH_A, 400, "invalid_user"),
        ({"model": "mira", "user": "p1", "messages": [{"role": "assistant", "content": "hi"}]},
         AUTH_A, 400, "invalid_messages"),
        ({"model": "mira", "user": "p1", "messages": [{"role": "user", "content": "x" * 2001}]},
         AUTH_A, 400, "text_too_long"),
        ({"model": "mira", "user": "p1",
          "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         AUTH_A, 400, "unsupported_content"),
        ({"model": "mira", "user": "p1", "messages": []}, AUTH_A, 400, "invalid_request"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_shaped_errors_that_say_what_to_fix(tmp_path, body, headers, status, code):
    with TestClient(_app(tmp_path)) as client:
        response = _chat(client, body, headers)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and len(error["message"]) > 20


def test_models_lists_the_personas_behind_the_api_key(tmp_path):
    with TestClient(_app(tmp_path)) as client:
        assert client.get("/v1/models").status_code == 401
        listed = client.get("/v1/models", headers=AUTH_A).json()
        ids = {m["id"] for m in listed["data"]}
        assert {"mira", "orla"} <= ids and listed["object"] == "list"
        assert client.post("/v1/chat/completions", content=b"{not json", headers=AUTH_A).status_code == 400


def test_the_openai_sdk_talks_to_a_persona_with_memory(tmp_path, subprocess_env, tiny_checkpoint):
    openai = pytest.importorskip("openai")
    env = {
        **subprocess_env,
        "COMPANION_MODEL": str(tiny_checkpoint),
        "COMPANION_DATA_DIR": str(tmp_path),
        "COMPANION_API_KEYS": f"studio-a:{KEY_A}",
        "COMPANION_MAX_NEW_TOKENS": "8",
        "COMPANION_DEMO": "false",
    }
    env.pop("REDIS_URL", None)
    server = ServerProcess(env, tmp_path / "log").start()
    try:
        sdk = openai.OpenAI(base_url=server.http + "/v1", api_key=KEY_A, max_retries=0)
        assert "mira" in {m.id for m in sdk.models.list()}

        told = sdk.chat.completions.create(
            model="mira",
            user="p7",
            messages=[{"role": "user", "content": "I have a really sensitive stomach."}],
        )
        assert told.choices[0].message.content and told.model == "mira"
        assert told.companion["strategy"] in {"answer", "support", "recall", "refuse"}
        _wait_for_memory(server, "p7", "stomach")

        stream = sdk.chat.completions.create(
            model="mira",
            user="p7",
            messages=[{"role": "user", "content": "I've been craving a big spicy hotpot lately."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        deltas = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
        meta = final.companion
        recalled = [m["content"] for m in meta["memories_used"]]
        assert any("stomach" in m for m in recalled), meta  # the fact told in the first turn
        assert meta["text"] == deltas.strip() or meta["revised"]
        assert chunks[-1].usage.completion_tokens > 0

        with pytest.raises(openai.NotFoundError, match="GET /v1/models"):
            sdk.chat.completions.create(
                model="nobody", user="p7", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.http + "/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        server.stop()


def _wait_for_memory(server, player: str, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = httpx.get(f"{server.http}/v1/players/{player}/memories", headers=AUTH_A).json()["events"]
        if any(needle in e["content"] for e in events):
            return
        time.sleep(0.2)
    raise AssertionError(f"no memory with {needle!r} after {timeout} s: {events}")
