"""Reflection benchmark: the decision layer's accuracy on the scripted scenarios, and its cost per turn.

    .venv/bin/python benchmarks/bench_reflection.py [--repeats 20]

Prints scenario accuracy, then p50/p95 milliseconds per turn of (a) the reflection
decision alone (emotion, knowledge boundary, recall choice; the line's embedding is
computed once per turn and shared with memory search, so it is counted in (c) only),
(b) the decision when it must embed the line itself, and (c) memory search plus the
decision, as the pipeline runs them, over every trigger line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    from companion.buffer import turns_since_mentioned
    from companion.reflection import Reflector
    from memory.embedding import MiniLMEmbedder
    from memory.fast_summarizer import FastSummarizer
    from memory.store import ChromaMemoryStore
    from persona_adapters import BUILTIN_PERSONAS, get_persona
    from training.evaluation.scenarios import load_scenarios, run_scenarios

    embedder = MiniLMEmbedder()
    reflector = Reflector(embedder)
    reflector.warm(BUILTIN_PERSONAS.values())
    with tempfile.TemporaryDirectory() as tmp:
        store = ChromaMemoryStore.embedded(tmp, embedder)
        store.warm()
        scenarios = load_scenarios()
        results = run_scenarios(scenarios, store, FastSummarizer(embedder), reflector)
        right = sum(r.ok for r in results)
        print(f"scenarios: {len(scenarios)}, trigger lines: {len(results)}, decision layer right on {right} "
              f"({100 * right / len(results):.1f}%)")  # fmt: skip
        for r in results:
            if not r.ok:
                print(f"  wrong: {r.scenario}: {r.text!r}: {'; '.join(r.problems)}")

        mira = get_persona("mira")
        player = "bench-player"
        for line in ("I have a really sensitive stomach.", "I have a driving test next Friday.", "I love spicy food.",
                     "My sister Anna is getting married.", "I work night shifts at the hospital."):  # fmt: skip
            from memory.events import Turn

            turn = Turn(role="player", text=line)
            store.add_sync(
                FastSummarizer(embedder).summarize_sync([turn]), player_id=player, npc_id="mira", turns=[turn]
            )
        lines = [r.text for r in results]
        decision_ms, turn_ms, own_embedding_ms = [], [], []
        for repeat in range(args.repeats):
            for i, line in enumerate(lines):
                text = (
                    f"{line} ({repeat}-{i})" if repeat else line
                )  # new text each repeat: no embedding cache hit
                t0 = time.perf_counter()
                recalled = store.search_sync(text, player_id=player, npc_id="mira", k=5)
                t1 = time.perf_counter()
                reflector.before(
                    text, persona=mira, recalled=recalled, recent_mentions=turns_since_mentioned([])
                )
                t2 = time.perf_counter()
                reflector.before(text + " ", persona=mira, recalled=recalled, recent_mentions={})
                t3 = time.perf_counter()
                decision_ms.append(1000 * (t2 - t1))
                turn_ms.append(1000 * (t2 - t0))
                own_embedding_ms.append(1000 * (t3 - t2))
    for name, values in (
        ("reflection decision", decision_ms),
        ("decision, embedding the line", own_embedding_ms),
        ("memory search + decision", turn_ms),
    ):
        print(f"{name:30s} p50 {np.percentile(values, 50):6.2f} ms   p95 {np.percentile(values, 95):6.2f} ms   "
              f"({len(values)} turns)")  # fmt: skip


if __name__ == "__main__":
    main()
