"""WebSocket protocol v1 and REST through create_app + TestClient: every message type, every
error case, auth isolation between keys, resume. Real Chroma and the real embedder; the
backbone is a scripted fake (the reply's wording is not the point here)."""

import asyncio
import json
import time

import jsonschema
import pytest
from fakes import FakeEngineBase
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_pipeline import FakeScriptedGenerator

from server import ServerSettings, create_app
from server.protocol import MAX_FRAME_BYTES, schemas, write_schemas

KEY_A, KEY_B = "key-a-secret-1", "key-b-secret-2"
AUTH_A, AUTH_B = {"Authorization": f"Bearer {KEY_A}"}, {"Authorization": f"Bearer {KEY_B}"}


class FakeSlowGenerator(FakeScriptedGenerator):
    """Streams like FakeScriptedGenerator, pausing between words so a test can talk over it."""

    async def stream(self, prompt, **kwargs):
        async for delta in super().stream(prompt, **kwargs):
            await asyncio.sleep(0.05)
            yield delta


class FakeFailingGenerator(FakeEngineBase):
    """A Generator whose backbone breaks on the first call and works afterwards."""

    def __init__(self):
        self.calls = 0

    async def stream(self, prompt, **kwargs):
        from companion.errors import GenerationFailedError

        self.calls += 1
        if self.calls == 1:
            raise GenerationFailedError("CUDA out of memory (simulated by the fake)")
        yield "Back on my feet, love."


def _app(tmp_path, generator=None, **settings):
    settings = ServerSettings(
        data_dir=tmp_path,
        api_keys=f"studio-a:{KEY_A},studio-b:{KEY_B}",
        demo_token="demo-token-123",
        **settings,
    )
    return create_app(settings, backbone=generator or FakeScriptedGenerator())


@pytest.fixture()
def client(tmp_path):
    with TestClient(_app(tmp_path, FakeSlowGenerator())) as c:
        yield c


def _hello(ws, key=KEY_A, player="p1", npc="mira", **extra):
    ws.send_json({"type": "hello", "token": key, "player_id": player, "npc_id": npc, **extra})
    return ws.receive_json()


def _say(ws, text, msg_id="m1"):
    """Sends a line; returns (token frames, the reply frame)."""
    ws.send_json({"type": "say", "id": msg_id, "text": text})
    tokens = []
    while True:
        frame = ws.receive_json()
        if frame["type"] == "token":
            tokens.append(frame)
        elif frame["type"] == "memory":
            continue
        else:
            return tokens, frame


def _validate(frame):
    jsonschema.validate(frame, schemas()[f"server.{frame['type']}.json"])


def _drain(client):
    client.portal.call(client.app.state.services.companion.writer.drain)


def test_hello_say_streams_tokens_then_a_reply_with_metadata(client):
    with client.websocket_connect("/v1/ws") as ws:
        ready = _hello(ws)
        assert ready["type"] == "ready" and ready["v"] == 1 and ready["resumed"] is False
        assert ready["persona"]["name"] == "Mira" and ready["session_id"]
        tokens, reply = _say(ws, "Good evening! What's on the menu?")
        assert len(tokens) > 1 and all(t["reply_to"] == "m1" and t["attempt"] == 1 for t in tokens)
        assert reply["type"] == "reply" and reply["reply_to"] == "m1"
        assert "".join(t["text"] for t in tokens).strip() == reply["text"]
        assert reply["metadata"]["strategy"] in ("answer", "support", "recall", "refuse")
        assert reply["usage"]["tokens"] == len(tokens) and reply["usage"]["time_to_first_token_ms"] > 0
        for frame in [ready, *tokens, reply]:
            _validate(frame)


def test_ping_pong_and_bye_closes_normally(client):
    with client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"type": "ping", "id": "p"})
        assert ws.receive_json() == {"type": "pong", "reply_to": "p"}
        _hello(ws)
        ws.send_json({"type": "bye"})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000


@pytest.mark.parametrize(
    ("frame", "code", "in_message"),
    [
        ("{not json", "bad_json", "not valid JSON"),
        ("[1, 2]", "bad_message", '"type"'),
        (json.dumps({"type": "dance"}), "unknown_type", "'dance'"),
        (json.dumps({"type": "hello", "token": KEY_A, "npc_id": "mira"}), "bad_message", "player_id"),
        (json.dumps({"type": "ping", "id": "x", "extra": 1}), "bad_message", "extra"),
        (json.dumps({"type": "say", "id": "1", "text": "x" * 2001}), "bad_message", "text"),
        (
            json.dumps({"type": "say", "id": "1", "text": "x" * (MAX_FRAME_BYTES + 10)}),
            "frame_too_large",
            "limit",
        ),
        (json.dumps({"type": "say", "id": "1", "text": "hi"}), "not_ready", "hello"),
        (json.dumps({"type": "game_event", "text": "a door slams"}), "not_ready", "hello"),
        # issue 16: these two once killed the socket with 1006 (RecursionError, int digit limit)
        ('{"type": "ping", "id": ' + "[" * 5000 + "]" * 5000 + "}", "bad_json", "nested"),
        ('{"type": "ping", "id": ' + "9" * 5000 + "}", "bad_json", "digits"),
    ],
)
def test_a_bad_frame_gets_an_error_and_the_socket_stays_usable(client, frame, code, in_message):
    with client.websocket_connect("/v1/ws") as ws:
        ws.send_text(frame)
        error = ws.receive_json()
        _validate(error)
        assert (error["type"], error["code"], error["fatal"]) == ("error", code, False)
        assert in_message in error["message"]
        assert _hello(ws)["type"] == "ready"
        assert _say(ws, "Still there?")[1]["type"] == "reply"


def test_a_binary_frame_is_refused_even_when_it_holds_json(client):
    with client.websocket_connect("/v1/ws") as ws:
        ws.send_bytes(json.dumps({"type": "ping", "id": "b"}).encode())
        error = ws.receive_json()
        assert (error["type"], error["code"], error["fatal"]) == ("error", "bad_message", False)
        assert "text frame" in error["message"]
        ws.send_json({"type": "ping", "id": "t"})
        assert ws.receive_json() == {"type": "pong", "reply_to": "t"}


def test_a_socket_that_never_says_hello_is_closed_after_the_hello_timeout(tmp_path):
    with TestClient(_app(tmp_path, hello_timeout_s=0.5)) as client:
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_json({"type": "ping", "id": "1"})  # pings do not count as a hello
            assert ws.receive_json()["type"] == "pong"
            error = ws.receive_json()
            assert (error["code"], error["fatal"]) == ("hello_timeout", True)
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4408
        with client.websocket_connect("/v1/ws") as ws:  # a hello in time is served as usual
            assert _hello(ws)["type"] == "ready"
            time.sleep(0.8)
            assert _say(ws, "Still there?")[1]["type"] == "reply"


def test_rest_wants_the_bearer_scheme_and_answers_bad_input_in_the_documented_shape(client):
    plain = client.get("/v1/players/p1/memories", headers={"Authorization": KEY_A})
    assert plain.status_code == 401 and plain.json()["detail"]["code"] == "unauthorized"
    bad = client.get("/v1/players/p1/memories?include_superseded=maybe", headers=AUTH_A)
    assert bad.status_code == 422 and set(bad.json()) == {"detail"}
    assert (
        bad.json()["detail"]["code"] == "bad_request"
        and "include_superseded" in bad.json()["detail"]["message"]
    )


def test_an_unknown_persona_is_an_error_and_a_second_hello_works(client):
    with client.websocket_connect("/v1/ws") as ws:
        error = _hello(ws, npc="gandalf")
        assert error["code"] == "unknown_persona" and "mira" in error["message"]
        assert _hello(ws)["type"] == "ready"
        again = _hello(ws)
        assert again["code"] == "already_ready"


def test_a_say_while_a_reply_streams_is_busy_and_the_first_reply_still_arrives(client):
    with client.websocket_connect("/v1/ws") as ws:
        _hello(ws)
        ws.send_json({"type": "say", "id": "first", "text": "Tell me a long story about the inn."})
        assert ws.receive_json()["type"] == "token"
        ws.send_json({"type": "say", "id": "second", "text": "Hello?"})
        ws.send_json({"type": "ping", "id": "pp"})
        frames = []
        while not frames or frames[-1]["type"] != "reply":
            frames.append(ws.receive_json())
        busy = [f for f in frames if f["type"] == "error"]
        assert [(b["code"], b["reply_to"]) for b in busy] == [("busy", "second")]
        assert {"type": "pong", "reply_to": "pp"} in frames
        assert frames[-1]["reply_to"] == "first"
        assert _say(ws, "Now then.", "third")[1]["type"] == "reply"


def test_a_bad_token_closes_with_4401(client):
    with client.websocket_connect("/v1/ws") as ws:
        error = _hello(ws, key="nope-not-a-key")
        assert error["code"] == "unauthorized" and error["fatal"] is True
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4401


def test_two_keys_never_see_each_others_players(client):
    with client.websocket_connect("/v1/ws") as ws:
        session = _hello(ws, key=KEY_A, player="p1")["session_id"]
        _say(ws, "I have a really sensitive stomach.")
    _drain(client)
    assert [e["type"] for e in client.get("/v1/players/p1/memories", headers=AUTH_A).json()["events"]] == [
        "health"
    ]
    assert client.get("/v1/players/p1/memories", headers=AUTH_B).json()["events"] == []
    assert client.get("/v1/players/p1/memories/export", headers=AUTH_B).json()["events"] == []
    assert client.delete("/v1/players/p1/memories", headers=AUTH_B).json()["deleted_events"] == 0
    assert len(client.get("/v1/players/p1/memories", headers=AUTH_A).json()["events"]) == 1
    with client.websocket_connect("/v1/ws") as ws:  # key B cannot borrow key A's session
        assert _hello(ws, key=KEY_B, player="p1", session_id=session)["code"] == "session_mismatch"
        ready = _hello(ws, key=KEY_B, player="p1")
        assert ready["history"] == []
        _say(ws, "Do you remember what I told you about my health?")
    prompt = client.app.state.services.companion.backbone.prompts[-1]
    assert "stomach" not in json.dumps(prompt)


def test_reconnecting_with_the_session_id_resumes_the_conversation(client):
    with client.websocket_connect("/v1/ws") as ws:
        session = _hello(ws)["session_id"]
        _, reply = _say(ws, "My name is Tomas and I'm a blacksmith.")
    with client.websocket_connect("/v1/ws") as ws:
        ready = _hello(ws, session_id=session)
        assert ready["resumed"] is True and ready["session_id"] == session
        assert [(h["role"], h["text"]) for h in ready["history"]] == [
            ("player", "My name is Tomas and I'm a blacksmith."),
            ("npc", reply["text"]),
        ]
        _say(ws, "What was my trade again?")
    last_prompt = json.dumps(client.app.state.services.companion.backbone.prompts[-1])
    assert "blacksmith" in last_prompt
    with client.websocket_connect("/v1/ws") as ws:
        assert _hello(ws, session_id="s_never_issued")["code"] == "unknown_session"
        assert _hello(ws, session_id=session, npc="orla")["code"] == "session_mismatch"


def test_a_game_event_reaches_the_next_reply_only(client):
    with client.websocket_connect("/v1/ws") as ws:
        _hello(ws)
        ws.send_json({"type": "game_event", "id": "g1", "text": "The player gave you a red rose"})
        _say(ws, "Do you like it?")
        _say(ws, "And now?", "m2")
    seen = [json.dumps(p) for p in client.app.state.services.companion.backbone.prompts]
    assert "gave you a red rose" in seen[-2] and "gave you a red rose" not in seen[-1]


def test_memory_subscription_announces_a_written_event(client):
    with client.websocket_connect("/v1/ws") as ws:
        _hello(ws, subscribe=["memory"])
        ws.send_json({"type": "say", "id": "m1", "text": "I'm allergic to peanuts."})
        frames = []
        while not any(f["type"] == "memory" for f in frames):
            frames.append(ws.receive_json())
        note = next(f for f in frames if f["type"] == "memory")
        _validate(note)
        assert note["action"] == "created" and note["event"]["type"] == "health"
        assert "peanut" in note["event"]["content"]


def test_rate_limit_per_key(tmp_path):
    with TestClient(_app(tmp_path, rate_limit_per_minute=2)) as client:
        with client.websocket_connect("/v1/ws") as ws:
            _hello(ws)
            _say(ws, "One.")
            _say(ws, "Two.", "m2")
            _, third = _say(ws, "Three.", "m3")
            assert (
                third["code"] == "rate_limited" and third["reply_to"] == "m3" and third["retry_after_s"] > 0
            )
        with client.websocket_connect("/v1/ws") as ws:  # another key has its own budget
            _hello(ws, key=KEY_B)
            assert _say(ws, "One.")[1]["type"] == "reply"
        assert client.get("/v1/players/p1/memories", headers=AUTH_A).status_code == 429


def test_a_failing_backbone_is_an_error_and_the_next_say_works(tmp_path):
    with TestClient(_app(tmp_path, FakeFailingGenerator())) as client:
        with client.websocket_connect("/v1/ws") as ws:
            _hello(ws)
            _, error = _say(ws, "Hello there.")
            assert error["code"] == "generation_failed" and "out of memory" in error["message"]
            assert _say(ws, "Hello again.", "m2")[1]["type"] == "reply"
        metrics = client.get("/metrics").text
        assert 'companion_errors_total{code="generation_failed"} 1.0' in metrics


def test_rest_personas_health_metrics_and_protocol(client):
    personas = client.get("/v1/personas").json()
    assert {p["id"] for p in personas} >= {"mira", "orla", "marlowe"}
    mira = client.get("/v1/personas/mira").json()
    assert mira["name"] == "Mira" and mira["has_adapter"] is True
    missing = client.get("/v1/personas/nobody")
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "unknown_persona"
    health = client.get("/health").json()
    assert (
        health["status"] == "ok"
        and health["chroma"] == "ok"
        and health["engine"] == "fake"
        and health["engine_status"] == "ok"
    )
    with client.websocket_connect("/v1/ws") as ws:
        _hello(ws)
        _say(ws, "I love apple pie.")
    _drain(client)
    metrics = client.get("/metrics").text
    assert 'companion_replies_total{npc_id="mira"' in metrics
    assert "companion_time_to_first_token_seconds_count 1.0" in metrics
    assert 'companion_memory_writes_total{action="created"} 1.0' in metrics
    listed = client.get("/v1/protocol").json()
    assert listed["version"] == 1 and len(listed["schemas"]) == 11
    assert client.get(listed["schemas"]["client.say.json"]).json()["properties"]["text"]["maxLength"] == 2000
    assert client.get("/v1/players/p1/memories").status_code == 401


def test_hard_delete_through_rest_leaves_nothing(client):
    with client.websocket_connect("/v1/ws") as ws:
        session = _hello(ws)["session_id"]
        _say(ws, "I have a really sensitive stomach.")
        _say(ws, "My sister Ana lives in the capital.", "m2")
    _drain(client)
    assert len(client.get("/v1/players/p1/memories", headers=AUTH_A).json()["events"]) == 2
    gone = client.delete("/v1/players/p1/memories", headers=AUTH_A).json()
    assert gone["deleted_events"] == 2 and gone["deleted_sessions"] == 1
    assert client.get("/v1/players/p1/memories", headers=AUTH_A).json()["events"] == []
    assert client.get("/v1/players/p1/memories/export", headers=AUTH_A).json()["events"] == []
    with client.websocket_connect("/v1/ws") as ws:
        assert _hello(ws, session_id=session)["code"] == "unknown_session"
        assert _hello(ws)["history"] == []


def test_schema_files_match_the_models(tmp_path):
    written = {p.name: json.loads(p.read_text()) for p in write_schemas(tmp_path)}
    from server.protocol import SCHEMA_DIR

    shipped = {p.name: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")}
    assert shipped == written, "server/schemas/ is stale: run python -m server.protocol"


@pytest.mark.parametrize("backend", ["in-process", "redis"])
def test_a_hard_delete_during_a_reply_wins_over_that_turns_write(tmp_path, request, backend):
    """Issue 16: a DELETE after the first token returned 200 with 0 deleted, then the fact was written."""
    extra = {"redis_url": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    with TestClient(_app(tmp_path, FakeSlowGenerator("Whiskers is a fine name, love."), **extra)) as client:
        services = client.app.state.services
        with client.websocket_connect("/v1/ws") as ws:
            assert _hello(ws, player="cat-owner")["type"] == "ready"
            ws.send_json({"type": "say", "id": "m1", "text": "My cat is named Whiskers."})
            assert ws.receive_json()["type"] == "token"  # the reply is streaming
            assert client.delete("/v1/players/cat-owner/memories", headers=AUTH_A).status_code == 200
            while ws.receive_json()["type"] != "reply":
                pass
            client.portal.call(_settle, services)
            memories = client.get("/v1/players/cat-owner/memories", headers=AUTH_A).json()["events"]
            assert memories == []  # the turn in flight was not written after the delete
            history = client.portal.call(_recent, services, "studio-a/cat-owner")
            assert history == []  # nor kept in the short-term buffer
            _say(ws, "My dog is named Rex.", msg_id="m2")  # a line said after the delete is remembered
            client.portal.call(_settle, services)
            memories = client.get("/v1/players/cat-owner/memories", headers=AUTH_A).json()["events"]
            assert len(memories) == 1 and "Rex" in memories[0]["content"]


async def _settle(services):
    """Waits until the memory writer has handled everything queued so far."""
    await services.companion.writer.drain()


async def _recent(services, player):
    return await services.companion.buffer.recent(player_id=player, npc_id="mira", n=10)
