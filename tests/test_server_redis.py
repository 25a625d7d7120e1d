"""The server on a real redis-server: buffers and sessions survive a server restart, the memory
writer queue is at-least-once with idempotent writes across a killed process, and a Redis
that goes away is a clear error that loses nothing."""

import asyncio
import json

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from services import RedisProcess, ServerProcess
from test_pipeline import FakeScriptedGenerator
from test_server_protocol import AUTH_A, KEY_A, _hello, _say

from server import ServerSettings, create_app
from server.client import CompanionClient
from server.redis_memory_writer import GROUP, STREAM

KEYS = f"studio-a:{KEY_A}"


def _redis_app(tmp_path, url, generator=None):
    settings = ServerSettings(data_dir=tmp_path, api_keys=KEYS, redis_url=url, worker_name="test-worker")
    return create_app(settings, backbone=generator or FakeScriptedGenerator())


def test_buffer_and_session_survive_a_server_restart(tmp_path, redis_url):
    with TestClient(_redis_app(tmp_path, redis_url)) as client:
        with client.websocket_connect("/v1/ws") as ws:
            session = _hello(ws)["session_id"]
            _, reply = _say(ws, "My name is Tomas and I forge horseshoes.")
            ws.send_json({"type": "game_event", "text": "The player lit a candle"})
            ws.send_json({"type": "ping"})
            ws.receive_json()
    restarted = FakeScriptedGenerator()
    with TestClient(_redis_app(tmp_path, redis_url, restarted)) as client:  # a new app: nothing in-process
        with client.websocket_connect("/v1/ws") as ws:
            ready = _hello(ws, session_id=session)
            assert ready["resumed"] is True
            assert [h["text"] for h in ready["history"]] == [
                "My name is Tomas and I forge horseshoes.",
                reply["text"],
            ]
            _say(ws, "What do I do for a living?")
        prompt = json.dumps(restarted.prompts[-1])
        assert "forge horseshoes" in prompt and "lit a candle" in prompt
        assert client.get("/health").json()["redis"] == "ok"


def _pending(url) -> int:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        group = next(g for g in client.xinfo_groups(STREAM) if g["name"] == GROUP)
        return group["pending"] + (group.get("lag") or 0)
    finally:
        client.close()


async def _tell(ws_url: str, text: str) -> None:
    """Says `text`; the server may die before it replies (that is the test)."""
    try:
        npc = await CompanionClient.connect(ws_url, token=KEY_A, player_id="p1", npc_id="mira")
        await asyncio.wait_for(npc.reply(text), 60)
        await npc.close()
    except Exception:
        pass


@pytest.mark.parametrize("failpoint", ["writer.after_consume", "writer.after_write"])
def test_a_server_killed_mid_write_writes_every_event_exactly_once_after_restart(
    tmp_path, redis_url, tiny_checkpoint, subprocess_env, failpoint
):
    env = {
        **subprocess_env,
        "REDIS_URL": redis_url,
        "COMPANION_API_KEYS": KEYS,
        "COMPANION_MODEL": str(tiny_checkpoint),
        "COMPANION_MAX_NEW_TOKENS": "4",
        "COMPANION_DATA_DIR": str(tmp_path / "data"),
        "COMPANION_WORKER_NAME": "worker-1",
        "COMPANION_DEMO": "false",
    }
    doomed = ServerProcess(
        {**env, "COMPANION_FAILPOINTS": f"{failpoint}=exit"}, tmp_path / "server1.log"
    ).start()
    try:
        asyncio.run(_tell(doomed.ws, "I have a really sensitive stomach."))
        assert doomed.wait_exit(60) == 75, doomed.log()  # the failpoint's exit: killed mid-write
    finally:
        doomed.stop()
    assert _pending(redis_url) == 1  # the job is still in the queue, unacknowledged

    server = ServerProcess(env, tmp_path / "server2.log").start()
    try:
        for _ in range(200):
            if _pending(redis_url) == 0:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert _pending(redis_url) == 0, server.log()
        events = httpx.get(f"{server.http}/v1/players/p1/memories", headers=AUTH_A).json()["events"]
        health = [e for e in events if e["type"] == "health"]
        assert len(health) == 1 and health[0]["mentions"] == 1, events
        assert "sensitive stomach" in health[0]["content"]
    finally:
        server.stop()


def test_redis_going_away_is_a_clear_error_and_loses_nothing(tmp_path):
    own = RedisProcess(tmp_path / "redis").start()
    try:
        with TestClient(_redis_app(tmp_path, own.url)) as client:
            with client.websocket_connect("/v1/ws") as ws:
                _hello(ws)
                _say(ws, "I'm training to be a knight.")
                own.stop()
                _, error = _say(ws, "Did you hear me?", "m2")
                assert error["type"] == "error" and error["code"] == "backend_unavailable"
                assert "Redis" in error["message"] and "retry" in error["message"]
                health = client.get("/health")
                assert health.status_code == 503 and health.json()["redis"].startswith("unreachable")
                own.start()
                _, reply = _say(ws, "Did you hear me now?", "m3")
                assert reply["type"] == "reply"
            assert _wait_for_health(client, 200)["memory_writer"] == "ok"  # once its retry got through
    finally:
        own.stop()


def test_the_first_turn_after_redis_comes_back_is_served_and_remembered(tmp_path):
    """Issue 16: after an outage with no traffic, the next `say` streamed, then failed on a stale
    pooled connection (backend_unavailable), and the turn was never remembered."""
    own = RedisProcess(tmp_path / "redis").start()
    try:
        with TestClient(_redis_app(tmp_path, own.url)) as client:
            with client.websocket_connect("/v1/ws") as ws:
                _hello(ws)
                _say(ws, "I'm training to be a knight.")
                services = client.app.state.services
                client.portal.call(services.companion.writer.drain)
                own.stop()
                own.start()  # back, empty, before anyone noticed: every pooled connection is stale
                assert client.get("/health").status_code == 200
                _, reply = _say(ws, "My sister Ana is getting married next spring.", "m2")
                assert reply["type"] == "reply", reply
            client.portal.call(services.companion.writer.drain)
            events = client.get("/v1/players/p1/memories", headers=AUTH_A).json()["events"]
            assert any("Ana" in e["content"] for e in events), events
    finally:
        own.stop()


def test_health_is_ready_only_while_the_memory_queue_works(tmp_path, redis_url):
    """/health pinged Redis and said ok while the memory writer had died on a Redis error."""
    with TestClient(_redis_app(tmp_path, redis_url)) as client:
        assert client.get("/health").json()["memory_writer"] == "ok"
        raw = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            raw.delete(STREAM)
            raw.set(STREAM, "not a stream")  # another program took the queue's key
            health = _wait_for_health(client, 503)
            assert "WRONGTYPE" in health["memory_writer"], health
            raw.delete(STREAM)  # freed: the writer recreates its queue and goes on
            assert _wait_for_health(client, 200)["memory_writer"] == "ok"
        finally:
            raw.close()
        with client.websocket_connect("/v1/ws") as ws:
            _hello(ws, player="p9")
            _say(ws, "My sister Ana is getting married next spring.")
        client.portal.call(client.app.state.services.companion.writer.drain)
        events = client.get("/v1/players/p9/memories", headers=AUTH_A).json()["events"]
        assert any("Ana" in e["content"] for e in events), events


def _wait_for_health(client, status: int, timeout: float = 20) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/health")
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.json()
            return response.json()
        time.sleep(0.1)


def test_a_server_refuses_to_start_on_an_unreachable_redis(tmp_path):
    from services import free_port

    from server.errors import BackendUnavailableError

    app = _redis_app(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(BackendUnavailableError, match="unset REDIS_URL"):
        with TestClient(app):
            pass
