"""Soak: mixed traffic on two server processes sharing one Redis and one Chroma server.

Starts redis-server, `chroma run` and two `companion serve` processes on loopback, then
for `--minutes` runs `--players` concurrent simulated players. Each player talks to one
persona through either process at random: it tells facts with a unique made-up name
("I have a dog named Vorasket."), makes small talk, sends game events, drops the socket
after the first token, reconnects and resumes its session, and now and then hard-deletes
its memories. When a player has told its facts it leaves and a new player takes its place.

At the end it waits for the memory queue to empty and checks every player's memories:
- lost: a fact whose reply arrived, told after the player's last delete, stored nowhere;
- duplicated: a fact stored as more than one event, or counted as mentioned twice;
- remnants: a fact told before a hard delete still stored after it.
It prints error frames by code, connection failures, and each server's resident memory
over time with its growth per hour (least squares after the warm-up).

    python benchmarks/soak.py --minutes 30            # the issue's soak
    python benchmarks/soak.py --minutes 2 --players 3 # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.client import CompanionClient, CompanionServerError  # noqa: E402

KEY = "soak-key-123456"
TEMPLATES = [
    "I have a dog named {}.",
    "My cat is named {}.",
    "My brother {} lives in Porto.",
    "My best friend is called {}.",
    "My sister {} is getting married next spring.",
    "My cousin {} works as a sailor.",
]
SMALL_TALK = [
    "How are you today?",
    "What's new around here?",
    "Tell me something about yourself.",
    "Nice weather, isn't it?",
    "I'm a bit tired.",
]
GAME_EVENTS = ["The player opened the door", "A bell rang in the distance", "The player sat down"]
PERSONAS = ["mira", "orla", "marlowe"]
DOCUMENTED = {"rate_limited", "busy"}  # errors a client is told to expect and retry
SYLLABLES = ["vor", "ask", "tel", "mun", "dra", "qui", "sol", "bex", "nar", "ith", "oph", "zun", "gal", "rey"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} not up after {timeout} s")


@dataclass
class Cluster:
    work: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    servers: list[tuple[str, subprocess.Popen]] = field(default_factory=list)  # (http url, process)
    redis_url: str = ""

    def start(self, args) -> None:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        port = _free_port()
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.procs.append(
            subprocess.Popen(
                [
                    redis_server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    str(self.work),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        chroma_port = _free_port()
        chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
        self.procs.append(
            subprocess.Popen(
                [chroma, "run", "--path", str(self.work / "chroma"), "--port", str(chroma_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            )
        )
        _wait_http(f"http://127.0.0.1:{chroma_port}/api/v2/heartbeat", self.procs[-1], 60)
        for name in ("a", "b"):
            http_port = _free_port()
            env = {
                **os.environ,
                "REDIS_URL": self.redis_url,
                "COMPANION_CHROMA_URL": f"http://127.0.0.1:{chroma_port}",
                "COMPANION_API_KEYS": f"soak:{KEY}",
                "COMPANION_PORT": str(http_port),
                "COMPANION_DATA_DIR": str(self.work / f"data-{name}"),
                "COMPANION_WORKER_NAME": f"soak-{name}",
                "COMPANION_MAX_NEW_TOKENS": str(args.max_new_tokens),
                "COMPANION_RATE_LIMIT_PER_MINUTE": "100000",
                "COMPANION_DEMO": "false",
                "COMPANION_ENGINE": args.engine,
                "COMPANION_LLAMACPP_LANES": "3",
            }
            if args.model:
                env["COMPANION_MODEL"] = args.model
            log = open(self.work / f"server-{name}.log", "wb")  # noqa: SIM115 - the child holds it
            proc = subprocess.Popen(
                [sys.executable, "-m", "companion_cli", "serve", "--log-level", "warning"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.procs.append(proc)
            self.servers.append((f"http://127.0.0.1:{http_port}", proc))
        for url, proc in self.servers:
            _wait_http(url + "/health", proc, 600)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class Ledger:
    confirmed: list[str] = field(default_factory=list)  # names whose reply arrived, since the last delete
    uncertain: list[str] = field(default_factory=list)  # told on a socket dropped mid-reply
    erased: list[str] = field(default_factory=list)  # told before a hard delete


@dataclass
class Stats:
    turns: int = 0
    drops: int = 0
    reconnects: int = 0
    resumed: int = 0
    deletes: int = 0
    game_events: int = 0
    players: int = 0
    errors: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    ledgers: dict[str, Ledger] = field(default_factory=dict)


def _names():
    rng = random.Random(7)
    seen = set()
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
        if name not in seen:
            seen.add(name)
            yield name


async def player(
    pid: str, servers: list[str], stats: Stats, names, deadline: float, rng: random.Random
) -> None:
    npc = rng.choice(PERSONAS)
    ledger = stats.ledgers.setdefault(pid, Ledger())
    facts = [t.format(next(names)) for t in rng.sample(TEMPLATES, len(TEMPLATES))]
    delete_after = rng.choice([None, None, 2, 3])
    session = None
    client = None
    stats.players += 1
    while facts and time.monotonic() < deadline:
        try:
            if client is None:
                http = rng.choice(servers)
                ws = http.replace("http", "ws") + "/v1/ws"
                client = await CompanionClient.connect(
                    ws, token=KEY, player_id=pid, npc_id=npc, session_id=session
                )
                stats.resumed += bool(session and client.ready.resumed)
                session = client.session_id
            if rng.random() < 0.3:
                await client.game_event(rng.choice(GAME_EVENTS))
                stats.game_events += 1
            tell = rng.random() < 0.6
            line = facts[0] if tell else rng.choice(SMALL_TALK)
            if rng.random() < 0.1:  # the player leaves mid-reply
                async for frame in client.say(line):
                    if frame.type == "token":
                        break
                await client.ws.close()
                client = None
                stats.drops += 1
                if tell:
                    ledger.uncertain.append(_name_of(facts.pop(0)))
                continue
            await client.reply(line)
            stats.turns += 1
            if tell:
                ledger.confirmed.append(_name_of(facts.pop(0)))
            if delete_after is not None and len(ledger.confirmed) == delete_after:
                await _delete(servers, pid, rng)
                ledger.erased += ledger.confirmed + ledger.uncertain
                ledger.confirmed, ledger.uncertain, delete_after = [], [], None
                stats.deletes += 1
                await client.close()
                client, session = None, None  # the delete ended the session
            elif rng.random() < 0.2:  # reconnect, maybe to the other process, and resume
                await client.close()
                client = None
                stats.reconnects += 1
        except CompanionServerError as e:
            stats.errors[e.error.code] += 1
            client = None if e.error.code in ("unknown_session",) else client
            if e.error.code == "unknown_session":
                session = None
        except Exception as e:  # a connection that failed: counted, and the player goes on
            stats.failures[type(e).__name__] += 1
            client = None
            await asyncio.sleep(1)
        await asyncio.sleep(rng.uniform(0.5, 2.0))  # think time
    if client is not None:
        await client.close()


def _name_of(line: str) -> str:
    return next(w.strip(".") for w in line.split() if w.strip(".").isalpha() and w[0].isupper() and w != "My"
                and w != "I")  # fmt: skip


async def _delete(servers: list[str], pid: str, rng: random.Random) -> None:
    request = urllib.request.Request(
        f"{rng.choice(servers)}/v1/players/{pid}/memories",
        method="DELETE",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=60).read())


async def traffic(servers: list[str], stats: Stats, args) -> None:
    deadline = time.monotonic() + 60 * args.minutes
    names, counter, rng = _names(), itertools.count(), random.Random(11)

    async def lane(i: int) -> None:
        while time.monotonic() < deadline:
            await player(
                f"soak-{next(counter)}", servers, stats, names, deadline, random.Random(rng.random())
            )

    await asyncio.gather(*(lane(i) for i in range(args.players)))


def sample_rss(cluster: Cluster, samples: list, stop: list) -> None:
    start = time.monotonic()
    while not stop:
        row = [time.monotonic() - start]
        for _, proc in cluster.servers:
            try:
                row.append(psutil.Process(proc.pid).memory_info().rss / 2**20)
            except psutil.Error:
                row.append(float("nan"))
        row += [_anonymous_mb(proc.pid) for _, proc in cluster.servers]
        samples.append(row)
        for _ in range(20):
            if stop:
                return
            time.sleep(0.5)


def _anonymous_mb(pid: int) -> float:
    """Resident anonymous memory (heaps, arenas, KV caches), without file-backed pages: model
    files mapped in are paged in as they are first touched, which looks like growth but is
    bounded by the files and reclaimable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 3:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return 3600 * sum((x - mx) * (y - my) for x, y in points) / sxx


def check_memories(servers: list[str], stats: Stats) -> dict[str, list]:
    found: dict[str, list] = {"lost": [], "duplicated": [], "remnants": [], "uncertain_kept": []}
    for pid, ledger in stats.ledgers.items():
        request = urllib.request.Request(
            f"{servers[0]}/v1/players/{pid}/memories?include_superseded=true",
            headers={"Authorization": f"Bearer {KEY}"},
        )
        events = json.loads(urllib.request.urlopen(request, timeout=60).read())["events"]
        for name in ledger.confirmed + ledger.uncertain:
            holding = [e for e in events if name in e["content"]]
            if name in ledger.confirmed and not holding:
                found["lost"].append((pid, name))
            if len(holding) > 1 or any(e["mentions"] > 1 for e in holding):
                found["duplicated"].append((pid, name, [e["content"] for e in holding]))
            if name in ledger.uncertain and holding:
                found["uncertain_kept"].append((pid, name))
        found["remnants"] += [(pid, n) for n in ledger.erased if any(n in e["content"] for e in events)]
    return found


def wait_for_queue(redis_url: str, timeout: float = 300) -> int:
    import redis

    from server.redis_memory_writer import GROUP, STREAM

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    while True:
        left = 0
        if client.exists(STREAM):
            group = next((g for g in client.xinfo_groups(STREAM) if g["name"] == GROUP), None)
            left = client.xlen(STREAM) if group is None else group["pending"] + (group.get("lag") or 0)
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--players", type=int, default=6, help="players talking at once")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--engine", default="auto")
    parser.add_argument(
        "--model", default=None, help="COMPANION_MODEL for both servers (default: the default)"
    )
    parser.add_argument("--warmup-minutes", type=float, default=3, help="memory growth is fitted after this")
    args = parser.parse_args()

    import threading

    work = Path(tempfile.mkdtemp(prefix="companion-soak-"))
    cluster, stats, samples, stop = Cluster(work), Stats(), [], []
    try:
        cluster.start(args)
        servers = [url for url, _ in cluster.servers]
        sampler = threading.Thread(target=sample_rss, args=(cluster, samples, stop), daemon=True)
        sampler.start()
        started = time.monotonic()
        asyncio.run(traffic(servers, stats, args))
        elapsed = time.monotonic() - started
        left = wait_for_queue(cluster.redis_url)
        stop.append(True)
        sampler.join()
        found = check_memories(servers, stats)
        crashed = [url for url, proc in cluster.servers if proc.poll() is not None]
    finally:
        stop.append(True)
        cluster.stop()
    with open(work / "rss.csv", "w") as f:  # seconds, RSS A, RSS B, anonymous A, anonymous B (MB)
        f.writelines(",".join(f"{v:.1f}" for v in row) + "\n" for row in samples)
    report(args, stats, found, samples, elapsed, left, crashed, work)
    bad = found["lost"] or found["duplicated"] or found["remnants"] or left or crashed
    bad = bad or any(code not in DOCUMENTED for code in stats.errors)
    return 1 if bad else 0


def report(args, stats: Stats, found, samples, elapsed, left, crashed, work) -> None:
    confirmed = sum(len(ledger.confirmed) for ledger in stats.ledgers.values())
    uncertain = sum(len(ledger.uncertain) for ledger in stats.ledgers.values())
    erased = sum(len(ledger.erased) for ledger in stats.ledgers.values())
    print(
        f"soak: {elapsed / 60:.1f} min, {args.players} players at once, 2 server processes, engine {args.engine}"
    )
    print(f"  players {stats.players}, turns answered {stats.turns}, drops mid-reply {stats.drops}, "
          f"reconnects {stats.reconnects} (resumed {stats.resumed}), game events {stats.game_events}, "
          f"hard deletes {stats.deletes}")  # fmt: skip
    print(
        f"  error frames: {dict(stats.errors) or 'none'}; connection failures: {dict(stats.failures) or 'none'}"
    )
    print(f"  facts confirmed {confirmed}: lost {len(found['lost'])}, duplicated {len(found['duplicated'])}")
    print(
        f"  facts told on a dropped socket {uncertain}: kept {len(found['uncertain_kept'])} (either is right)"
    )
    print(f"  facts erased by a delete {erased}: remnants {len(found['remnants'])}")
    print(f"  memory queue left after the run: {left}; servers that died: {crashed or 'none'}")
    for i, name in enumerate(("A", "B")):
        for label, col in (("RSS", 1 + i), ("anonymous", 3 + i)):
            after = [(row[0], row[col]) for row in samples if row[0] >= 60 * args.warmup_minutes]
            print(f"  server {name} {label}: start {samples[0][col]:.0f} MB, end {samples[-1][col]:.0f} MB, "
                  f"peak {max(row[col] for row in samples):.0f} MB, growth after warm-up "
                  f"{slope_per_hour(after):+.0f} MB/hour ({len(after)} samples)")  # fmt: skip
    for kind in ("lost", "duplicated", "remnants"):
        for item in found[kind][:5]:
            print(f"  {kind}: {item}")
    print(f"  logs and rss.csv: {work}")


if __name__ == "__main__":
    sys.exit(main())
