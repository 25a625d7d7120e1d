"""Two server processes on one Redis and one Chroma server (`chroma run`), on loopback, as the
README's scale-out promises: sessions, memory and memory notes are shared; a process killed
mid-write has its job claimed by the other and written once; a rolling restart of both loses
no turn. The processes run the tiny random model: the wording of replies is not the point.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis
from services import ChromaProcess, RedisProcess, ServerProcess
from test_server_protocol import AUTH_A, KEY_A
from websockets.exceptions import ConnectionClosed

from server.client import CompanionClient, CompanionServerError
from server.redis_memory_writer import DEAD, GROUP, STREAM

FACTS = {  # a line the fast summarizer stores, and a word of the event it becomes
    "I have a dog named Rex.": "Rex",
    "My sister Ana is getting married next spring.": "Ana",
    "I work as a nurse.": "nurse",
    "I have a driving test next Friday.": "driving test",
    "I'm allergic to peanuts.": "peanuts",
    "My brother Tomas lives in Porto.": "Porto",
    "I play the violin every evening.": "violin",
    "I hate thunderstorms.": "thunderstorms",
    "I grew up in a fishing village.": "fishing village",
    "My mother is a baker.": "baker",
    "I'm saving up for a boat.": "boat",
    "My cat is named Pebble.": "Pebble",
}


def _env(subprocess_env, tmp_path, tiny_checkpoint, redis_url: str, chroma_url: str, name: str) -> dict:
    env = {
        **subprocess_env,
        "REDIS_URL": redis_url,
        "COMPANION_CHROMA_URL": chroma_url,
        "COMPANION_API_KEYS": f"studio-a:{KEY_A}",
        "COMPANION_MODEL": str(tiny_checkpoint),
        "COMPANION_MAX_NEW_TOKENS": "4",
        "COMPANION_DATA_DIR": str(tmp_path / f"data-{name}"),  # nothing shared on disk
        "COMPANION_WORKER_NAME": name,
        "COMPANION_WRITER_CLAIM_IDLE_S": "2",
        "COMPANION_DEMO": "false",
        "COMPANION_HISTORY_ON_RESUME": "40",
    }
    return env


@pytest.fixture(scope="module")
def backing(tmp_path_factory):
    """One Redis and one Chroma server for the module."""
    root = tmp_path_factory.mktemp("scale-out")
    own_redis = RedisProcess(root / "redis").start()
    chroma = ChromaProcess(root / "chroma").start()
    yield own_redis, chroma
    chroma.stop()
    own_redis.stop()


@pytest.fixture(scope="module")
def pair(backing, tmp_path_factory, tiny_checkpoint, subprocess_env):
    """Servers A and B on the shared Redis (db 0) and Chroma."""
    own_redis, chroma = backing
    root = tmp_path_factory.mktemp("pair")
    servers = [
        ServerProcess(
            _env(subprocess_env, root, tiny_checkpoint, own_redis.url, chroma.url, name), root / f"{name}.log"
        )
        for name in ("a", "b")
    ]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def _events(server: ServerProcess, player: str) -> list[dict]:
    response = httpx.get(
        f"{server.http}/v1/players/{player}/memories",
        params={"include_superseded": "true"},
        headers=AUTH_A,
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["events"]


def _queue(url: str) -> tuple[int, int]:
    """(jobs queued or pending, jobs dead-lettered)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        if not client.exists(STREAM):
            return 0, client.xlen(DEAD)
        group = next(g for g in client.xinfo_groups(STREAM) if g["name"] == GROUP)
        return group["pending"] + (group.get("lag") or 0), client.xlen(DEAD)
    finally:
        client.close()


def _wait_for_queue(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _queue(url)[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _queue(url) == (0, 0), "memory writes still queued or dead-lettered"


def test_a_conversation_moves_between_processes_with_its_session_memory_and_notes(pair):
    a, b = pair

    async def flow():
        watcher = await CompanionClient.connect(
            b.ws, token=KEY_A, player_id="p1", npc_id="mira", subscribe_memory=True
        )
        async with await CompanionClient.connect(a.ws, token=KEY_A, player_id="p1", npc_id="mira") as on_a:
            await on_a.reply("I have a really sensitive stomach.")
            session = on_a.session_id
        deadline = time.monotonic() + 60
        while not any("stomach" in n.event.content for n in watcher.memories):  # written by A or B
            assert time.monotonic() < deadline, "no memory note reached the client on B"
            await watcher.ping()
            await asyncio.sleep(0.1)
        await watcher.close()
        async with await CompanionClient.connect(
            b.ws, token=KEY_A, player_id="p1", npc_id="mira", session_id=session
        ) as on_b:
            assert on_b.ready.resumed and on_b.ready.history[0].text == "I have a really sensitive stomach."
            reply = await on_b.reply("I've been craving a big spicy hotpot lately.")
        return reply

    reply = asyncio.run(flow())
    recalled = [m.content for m in reply.metadata.memories_used]
    assert any("stomach" in m for m in recalled), reply.metadata  # told on A, recalled on B


def test_a_process_killed_mid_write_has_its_job_claimed_and_written_once(
    backing, tmp_path, tiny_checkpoint, subprocess_env
):
    own_redis, chroma = backing
    url = own_redis.url.rsplit("/", 1)[0] + "/1"  # a queue of its own: nobody else may take the job
    env = {
        **_env(subprocess_env, tmp_path, tiny_checkpoint, url, chroma.url, "doomed"),
        "COMPANION_FAILPOINTS": "writer.after_write=exit",  # events in Chroma, job not acknowledged
    }
    doomed = ServerProcess(env, tmp_path / "doomed.log").start()
    try:

        async def tell():
            try:
                npc = await CompanionClient.connect(doomed.ws, token=KEY_A, player_id="p2", npc_id="orla")
                await asyncio.wait_for(npc.reply("I'm allergic to peanuts."), 60)
            except (ConnectionClosed, OSError, CompanionServerError):
                pass  # the process may die before the reply arrives

        asyncio.run(tell())
        assert doomed.wait_exit(60) == 75, doomed.log()
    finally:
        doomed.stop()
    assert _queue(url)[0] == 1
    survivor_env = _env(subprocess_env, tmp_path, tiny_checkpoint, url, chroma.url, "survivor")
    survivor = ServerProcess(survivor_env, tmp_path / "survivor.log").start()
    try:
        _wait_for_queue(url)
        events = [e for e in _events(survivor, "p2") if "peanuts" in e["content"]]
        assert len(events) == 1 and events[0]["mentions"] == 1, events
    finally:
        survivor.stop()


def test_a_rolling_restart_of_both_processes_loses_no_turn(pair, backing):
    a, b = pair
    own_redis, _ = backing
    lines = list(FACTS)
    done: list[str] = []
    failures: list[str] = []
    sessions: list[str] = []

    async def talk():
        session, servers = None, [a, b]
        for i, line in enumerate(lines):
            for attempt in range(20):  # a turn cut by a restart is said again, on the other process
                server = servers[(i + attempt) % 2]
                try:
                    npc = await CompanionClient.connect(
                        server.ws, token=KEY_A, player_id="p3", npc_id="marlowe", session_id=session
                    )
                    await asyncio.wait_for(npc.reply(line), 30)
                    session = npc.session_id
                    sessions.append(session)
                    await npc.close()
                    done.append(line)
                    if len(done) in reached:
                        reached[len(done)].set()
                    break
                except (ConnectionClosed, OSError, CompanionServerError, TimeoutError) as e:
                    failures.append(f"{line}: {type(e).__name__}")
                    await asyncio.sleep(0.3)
            await asyncio.sleep(0.5)

    reached = {3: asyncio.Event(), 7: asyncio.Event()}  # A restarts after turn 3, B after turn 7

    async def restart_both():
        for server, turn in ((a, 3), (b, 7)):
            await reached[turn].wait()
            old = server.proc.pid
            await asyncio.to_thread(server.stop)  # SIGTERM, as an orchestrator does
            await asyncio.to_thread(server.start)
            assert server.proc.pid != old

    async def both():
        await asyncio.gather(talk(), restart_both())

    asyncio.run(both())
    assert done == lines, failures
    _wait_for_queue(own_redis.url)
    events = _events(a, "p3")
    missing = [word for word in FACTS.values() if not any(word in e["content"] for e in events)]
    assert not missing, (missing, failures)

    async def history():
        async with await CompanionClient.connect(
            a.ws, token=KEY_A, player_id="p3", npc_id="marlowe", session_id=sessions[-1]
        ) as npc:
            return [h.text for h in npc.ready.history if h.role == "player"]

    told = asyncio.run(history())
    assert all(line in told for line in lines), told  # every turn is in the short-term buffer
