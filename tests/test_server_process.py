"""`companion serve` (alias `companion-server`), the main job's command, through its real console entry point."""

import subprocess
from pathlib import Path

import httpx
from services import ServerProcess, free_port


def _run(args, env, timeout=120):
    import sys

    exe = Path(sys.executable).parent / "companion-server"
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_help_has_an_example(subprocess_env):
    import sys

    for command in (["companion", "serve", "--help"], ["companion-server", "--help"]):
        exe = Path(sys.executable).parent / command[0]
        out = subprocess.run(
            [str(exe), *command[1:]], env=subprocess_env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "companion serve --host 0.0.0.0" in out.stdout, command


def test_it_serves_the_demo_and_health(tmp_path, subprocess_env, tiny_checkpoint):
    env = {**subprocess_env, "COMPANION_MODEL": str(tiny_checkpoint), "COMPANION_DATA_DIR": str(tmp_path)}
    env.pop("REDIS_URL", None)
    server = ServerProcess(env, tmp_path / "log").start()
    try:
        page = httpx.get(server.http + "/")
        assert page.status_code == 200 and "Companion" in page.text and "/static/app.js" in page.text
        assert httpx.get(server.http + "/static/app.js").status_code == 200
        assert httpx.get(server.http + "/health").json()["redis"] == "not configured (in-process)"
        assert httpx.get(server.http + "/demo/config").json()["token"]
    finally:
        server.stop()


def test_the_python_client_talks_to_a_real_server(tmp_path, subprocess_env, tiny_checkpoint):
    import asyncio

    from server.client import CompanionClient, CompanionServerError

    key = "client-test-key-1"
    env = {
        **subprocess_env,
        "COMPANION_MODEL": str(tiny_checkpoint),
        "COMPANION_DATA_DIR": str(tmp_path),
        "COMPANION_API_KEYS": f"studio:{key}",
        "COMPANION_MAX_NEW_TOKENS": "6",
    }
    env.pop("REDIS_URL", None)
    server = ServerProcess(env, tmp_path / "log").start()

    async def talk():
        async with await CompanionClient.connect(
            server.ws, token=key, player_id="p1", npc_id="orla", subscribe_memory=True
        ) as npc:
            assert npc.ready.persona.name == "Chief Orla Vance"
            await npc.game_event("The reactor alarm went off")
            frames = [f async for f in npc.say("I'm allergic to peanuts.")]
            assert frames[-1].type == "reply" and npc.last_reply is frames[-1]
            assert all(f.type == "token" for f in frames[:-1])
            assert await npc.ping() < 5
            session = npc.session_id
        async with await CompanionClient.connect(server.ws, token=key, player_id="p1", npc_id="orla",
                                                 session_id=session) as again:  # fmt: skip
            assert again.ready.resumed and again.ready.history[0].text == "I'm allergic to peanuts."
        try:
            await CompanionClient.connect(server.ws, token=key, player_id="p1", npc_id="nobody")
        except CompanionServerError as e:
            return e.code

    try:
        assert asyncio.run(talk()) == "unknown_persona"
    finally:
        server.stop()


def test_bad_settings_say_what_to_fix(tmp_path, subprocess_env):
    env = {**subprocess_env, "COMPANION_API_KEYS": "studio-a", "COMPANION_DATA_DIR": str(tmp_path)}
    out = _run([], env)
    assert out.returncode == 2 and "expected name:secret" in out.stderr


def test_an_unreachable_redis_stops_the_start_with_the_fix(tmp_path, subprocess_env, tiny_checkpoint):
    env = {
        **subprocess_env,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "COMPANION_MODEL": str(tiny_checkpoint),
        "COMPANION_DATA_DIR": str(tmp_path),
        "COMPANION_PORT": str(free_port()),
    }
    out = _run([], env)
    assert out.returncode != 0 and "unset REDIS_URL" in out.stderr


def test_a_model_that_fails_to_load_stops_the_start_with_the_reason(tmp_path, subprocess_env):
    env = {
        **subprocess_env,
        "COMPANION_MODEL": str(tmp_path / "no-such-checkpoint"),
        "COMPANION_DATA_DIR": str(tmp_path),
        "COMPANION_PORT": str(free_port()),
    }
    env.pop("REDIS_URL", None)
    out = _run([], env)
    assert out.returncode != 0 and "Companion could not start" in out.stderr
    assert "no-such-checkpoint" in out.stderr


def test_idle_and_half_open_connections_are_closed_by_the_handshake_timeout(
    tmp_path, subprocess_env, tiny_checkpoint
):
    """Issue 16: a raw TCP connection that sent nothing, and one that sent half its headers, were open at 600 s."""
    import socket
    import time

    env = {
        **subprocess_env,
        "COMPANION_MODEL": str(tiny_checkpoint),
        "COMPANION_DATA_DIR": str(tmp_path),
        "COMPANION_HANDSHAKE_TIMEOUT_S": "1",
    }
    env.pop("REDIS_URL", None)
    server = ServerProcess(env, tmp_path / "log").start()
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))
        half = socket.create_connection(("127.0.0.1", server.port))
        half.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never the blank line that ends the headers
        for sock in (silent, half):
            sock.settimeout(10)
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 5
            sock.close()
        assert httpx.get(server.http + "/health").status_code == 200  # a complete request is served
    finally:
        server.stop()
