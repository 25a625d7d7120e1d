"""Load script (not a test): N concurrent WebSocket conversations against a local server.

Starts `companion serve` on a free loopback port (embedded defaults, the default model)
unless --url points at a running one, runs N sessions of M lines each at once, and prints
time to first token p50/p95, reply time, tokens/s and the error count. Bounded in time:
sessions still running at --timeout count as errors.

    .venv/bin/python benchmarks/load_ws.py --sessions 20 --turns 2
    .venv/bin/python benchmarks/load_ws.py --sessions 20 --turns 2 --engine hf   # the reference engine
    .venv/bin/python benchmarks/load_ws.py --url ws://127.0.0.1:8000/v1/ws --token KEY
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.client import CompanionClient  # noqa: E402

LINES = [
    "Good evening! What's good tonight?",
    "I have a really sensitive stomach.",
    "My sister Ana is getting married next spring.",
    "I've been craving hotpot lately.",
    "I'm a bit tired after the road.",
    "Do you remember what I told you?",
]
PERSONAS = ["mira", "orla", "marlowe"]


async def session(
    url: str, token: str, n: int, turns: int, personas: list[str], results: list, errors: list
) -> None:
    try:
        async with await CompanionClient.connect(
            url, token=token, player_id=f"load-{n}", npc_id=personas[n % len(personas)]
        ) as npc:
            for t in range(turns):
                started, first, n_tokens = time.perf_counter(), None, 0
                async for frame in npc.say(LINES[(n + t) % len(LINES)]):
                    if frame.type == "token":
                        first = first or time.perf_counter()
                        n_tokens += 1
                results.append(
                    {
                        "ttft": (first or time.perf_counter()) - started,
                        "total": time.perf_counter() - started,
                        "tokens": npc.last_reply.usage.tokens,
                        "streamed": n_tokens,
                        "regenerated": npc.last_reply.metadata.regenerated,
                    }
                )
    except Exception as e:
        errors.append(f"session {n}: {type(e).__name__}: {e}")


def start_server(max_new_tokens: int, engine: str) -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "load-test-key-" + os.urandom(6).hex()
    env = {
        **os.environ,
        "COMPANION_PORT": str(port),
        "COMPANION_API_KEYS": f"load:{token}",
        "COMPANION_DATA_DIR": tempfile.mkdtemp(prefix="companion-load-"),
        "COMPANION_MAX_NEW_TOKENS": str(max_new_tokens),
        "COMPANION_RATE_LIMIT_PER_MINUTE": "100000",
        "COMPANION_DEMO": "false",
        "COMPANION_ENGINE": engine,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "companion_cli", "serve", "--log-level", "warning"], cwd=ROOT, env=env
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, f"ws://127.0.0.1:{port}/v1/ws", token
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}") from None
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become healthy in 180 s")


def _peak_rss_mb(proc: subprocess.Popen) -> float | None:
    """The server's peak resident memory; the server re-executes itself once, so its pid is the child's."""
    pids = [proc.pid]
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    peaks = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return max(peaks) if peaks else None


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def main_async(args) -> int:
    proc = None
    url, token = args.url, args.token
    if url is None:
        proc, url, token = start_server(args.max_new_tokens, args.engine)
    results: list[dict] = []
    errors: list[str] = []
    started = time.perf_counter()
    try:
        tasks = [
            asyncio.create_task(session(url, token, n, args.turns, args.personas.split(","), results, errors))
            for n in range(args.sessions)
        ]
        done, pending = await asyncio.wait(tasks, timeout=args.timeout)
        for task in pending:
            task.cancel()
            errors.append("session still running at --timeout")
        wall = time.perf_counter() - started
    finally:
        peak_rss = _peak_rss_mb(proc) if proc is not None else None
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    ttft = [r["ttft"] * 1000 for r in results]
    total = [r["total"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    print(f"sessions {args.sessions} x turns {args.turns} ({args.personas}) against {url} (loopback)")
    print(f"replies {len(results)} / {args.sessions * args.turns}, errors {len(errors)}, wall {wall:.1f} s")
    if results:
        print(
            f"time to first token ms: p50 {pct(ttft, 50):.0f}  p95 {pct(ttft, 95):.0f}  max {max(ttft):.0f}"
        )
        print(f"reply time s:           p50 {pct(total, 50):.2f}  p95 {pct(total, 95):.2f}")
        print(f"tokens {tokens}, aggregate {tokens / wall:.1f} tokens/s (final replies' tokens)")
        streamed = sum(r["streamed"] for r in results)
        regenerated = sum(r["regenerated"] for r in results)
        print(f"token frames streamed {streamed} (drafts included), {regenerated} replies regenerated once")
    if peak_rss is not None:
        print(f"server peak memory (VmHWM, engine {args.engine}): {peak_rss:.0f} MB")
    for error in errors[:10]:
        print("error:", error)
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="for the server this script starts")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--engine",
        default="auto",
        help="COMPANION_ENGINE of the server this script starts (auto, llamacpp, hf)",
    )
    parser.add_argument(
        "--personas",
        default=",".join(PERSONAS),
        help="comma-separated; session n talks to the n-th modulo their number (default: all three)",
    )
    parser.add_argument("--url", help="a running server's ws:// URL (loopback); default: start one")
    parser.add_argument("--token", help="its API key")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
