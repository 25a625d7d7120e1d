"""Does the memory writer delay replies? Reply latency with the writer busy and with it idle.

    .venv/bin/python benchmarks/bench_writer_latency.py [--reps 2] [--engine llamacpp]

One player says the same fact-bearing lines in two modes on the default model (greedy, 32 new
tokens, the main command's defaults), alternating line by line so that both modes see the
same machine load:
- busy: the next line starts as soon as the reply ends, while the writer summarizes and stores
  the previous turn in the background (as in a game);
- idle: the next line starts only after the writer has finished (`drain`).
Prints time to first token and whole-reply time, p50 per mode, and the busy/idle ratio; and
the writer's own cost per turn (summarize + store, measured apart). Issue 13: extraction must
never delay a reply.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINES = [
    "I work night shifts at the hospital, so I sleep during the day.",
    "My sister Anna is getting married in June.",
    "I have a really sensitive stomach, so go easy on the spices.",
    "We adopted a rescue greyhound named Pepper last spring.",
    "I'm training for a marathon and my knees hurt.",
    "Tomorrow I'm flying out to see my dad, he's having surgery.",
    "I bought a new bike and I ride it to work every day.",
    "My best friend moved to Lisbon and I miss her a lot.",
]


async def one_turn(companion, player: str, text: str) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    async for event in companion.pipeline.turn(player_id=player, npc_id="mira", text=text):
        if event.kind == "token" and first is None:
            first = time.perf_counter() - started
    return first or float("nan"), time.perf_counter() - started


async def run(args) -> None:
    from companion.assembly import Companion
    from companion.backbone import GenerationParams
    from companion.backbone.engines import build_engine
    from memory.events import Turn

    engine = build_engine(args.engine)
    params = GenerationParams(max_new_tokens=32, temperature=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        companion = Companion.build(data_dir=tmp, backbone=engine, params=params)
        await one_turn(companion, "warm-up", "Hello there.")
        await companion.writer.drain()
        times: dict[str, list[tuple[float, float]]] = {"busy": [], "idle": []}
        for rep in range(args.reps):
            players = {mode: f"{mode}-{rep}-{uuid.uuid4().hex[:6]}" for mode in times}
            for i, line in enumerate(LINES):
                for mode in ("busy", "idle") if i % 2 == 0 else ("idle", "busy"):
                    times[mode].append(await one_turn(companion, players[mode], line))
                    if mode == "idle":
                        await companion.writer.drain()
            await companion.writer.drain()
        summarizer, store = companion.writer.summarizer, companion.store
        write_ms = []
        for line in LINES:
            turn = Turn(role="player", text=line)
            started = time.perf_counter()
            drafts = await summarizer.summarize([turn], npc_name="Mira")
            await store.add(drafts, player_id="writer-cost", npc_id="mira", turns=[turn])
            write_ms.append(1000 * (time.perf_counter() - started))
        await companion.close()
    print(f"engine {engine.kind}; {len(LINES)} lines x {args.reps} reps per mode, greedy, 32 new tokens")
    for mode, pairs in times.items():
        ttft, total = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        print(
            f"  writer {mode:<4}: first token p50 {1000 * ttft:7.0f} ms   whole reply p50 {1000 * total:7.0f} ms"
        )
    ratio = statistics.median(p[1] for p in times["busy"]) / statistics.median(p[1] for p in times["idle"])
    print(f"  whole reply, busy / idle: {ratio:.3f}")
    print(f"  the writer's own work per turn (summarize + store): p50 {statistics.median(write_ms):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--engine", default="auto", help="auto (llamacpp when installed), llamacpp or hf")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
