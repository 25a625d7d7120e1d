"""Memory benchmark: summarizers, ingest, and search latency per player-NPC vs one filtered collection.

    .venv/bin/python benchmarks/bench_memory.py                      # everything (~10 min)
    .venv/bin/python benchmarks/bench_memory.py --sizes 10000 --generative-limit 20

Prints:
1. Summarizer turns/s and per-type precision/recall on training/evaluation/data/memory_dev_set.jsonl,
   for the fast summarizer and the generative one on the default backbone.
2. Ingest events/s through `store.add` (embedding + consolidation), and raw bulk adds.
3. Search latency p50/p95 with 1,000 players (x 2 NPCs) holding N events in total, side
   by side: Companion's layout (one collection per player-NPC pair) and the naive layout
   (one collection, filtered by player and NPC metadata), with the ratio. A player's first
   query (cold: Chroma loads the collection's index) is shown apart from later ones; the
   store's query and the query embedding are timed separately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_PLAYERS = 1000


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def dev_set() -> list[tuple[str, str]]:
    rows = [
        json.loads(line)
        for line in (ROOT / "training/evaluation/data/memory_dev_set.jsonl").read_text().splitlines()
    ]
    return [(r["text"], r["label"]) for r in rows]


def evaluate(name: str, summarize, rows) -> None:
    from memory.events import Turn
    from training.classifiers.fast_summarizer import LABELS
    from training.classifiers.linear import per_class_report

    predicted, started = [], time.perf_counter()
    for text, _ in rows:
        drafts = asyncio.run(summarize([Turn(role="player", text=text)]))
        predicted.append(str(drafts[0].type) if drafts else "none")
    seconds = time.perf_counter() - started
    report = per_class_report([g for _, g in rows], predicted, LABELS)
    print(
        f"\n{name}: {len(rows) / seconds:.1f} turns/s ({1000 * seconds / len(rows):.1f} ms/turn) on {len(rows)} turns"
    )
    print(f"  {'type':15s} precision  recall   f1     support")
    for label in LABELS:
        r = report[label]
        print(
            f"  {label:15s} {r['precision']:.2f}       {r['recall']:.2f}     {r['f1']:.2f}   {r['support']}"
        )
    print(f"  macro-F1 {report['macro_f1']['f1']:.3f}")


def bench_summarizers(embedder, generative_limit: int) -> None:
    from memory.fast_summarizer import FastSummarizer

    rows = dev_set()
    evaluate("fast summarizer (MiniLM + linear classifier)", FastSummarizer(embedder).summarize, rows)
    if generative_limit <= 0:
        return
    from companion.backbone import HFBackbone
    from companion.text_generator import BackboneTextGenerator
    from memory.generative_summarizer import GenerativeSummarizer

    backbone = HFBackbone.from_config()
    sample = random.Random(0).sample(rows, min(generative_limit, len(rows)))
    generative = GenerativeSummarizer(BackboneTextGenerator(backbone), max_new_tokens=64)
    evaluate("generative summarizer (default backbone, no summarizer adapter)", generative.summarize, sample)
    backbone.close()


def event_pool(embedder) -> tuple[list[str], np.ndarray]:
    from memory.retrieval import fact_key
    from memory.rewrite import to_third_person
    from training.data.summarizer_examples import build_dataset

    texts = [to_third_person(t) for t, label in build_dataset(400, seed=1) if label != "none"]
    vectors = np.asarray(embedder.embed([fact_key(t) for t in texts]), dtype=np.float32)
    return texts, vectors


def bench_ingest(embedder, texts: list[str]) -> None:
    from memory.events import EventDraft, Turn
    from memory.store import ChromaMemoryStore

    with tempfile.TemporaryDirectory() as tmp:
        store = ChromaMemoryStore.embedded(tmp, embedder)
        rng = random.Random(0)
        n = 600
        started = time.perf_counter()
        for i in range(n):
            text = rng.choice(texts)
            draft = EventDraft(type="preference", content=text, importance=5)
            store.add_sync(
                [draft],
                player_id=f"p{i % 50}",
                npc_id="mira",
                turns=[Turn(id=f"t{i}", role="player", text=text)],
            )
        seconds = time.perf_counter() - started
    print(
        f"\ningest through store.add (embed + consolidate + write, one event per call): {n / seconds:.0f} events/s"
    )


NPCS = ("mira", "rex")


def build_layouts(client, texts, vectors, n_events: int, rng: np.random.Generator):
    """Writes the same events into both layouts; returns ({(player, npc): collection}, naive collection)."""
    from memory.chroma_layout import COLLECTION_METADATA
    from memory.consolidation import SAID_VECTOR, encode_vector, event_metadata
    from memory.events import EventDraft, MemoryEvent

    per_pair = n_events // (N_PLAYERS * len(NPCS))
    naive = client.create_collection(
        f"naive-{n_events}", metadata={"hnsw:space": "cosine"}, embedding_function=None
    )
    collections, naive_seconds, ours_seconds = {}, 0.0, 0.0
    batch_ids, batch_vecs, batch_meta = [], [], []
    for p in range(N_PLAYERS):
        for npc in NPCS:
            idx = rng.integers(0, len(texts), per_pair)
            vecs = vectors[idx] + rng.normal(0, 0.02, (per_pair, vectors.shape[1])).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            events = [
                MemoryEvent.from_draft(EventDraft(type="preference", content=texts[i], importance=5), player_id=f"p{p}", npc_id=npc)
                .model_copy(update={"said": f"So, {texts[i]}"})
                for i in idx
            ]  # fmt: skip
            # each event as the writer stores it: with the embedding of the words it came from
            meta = [
                event_metadata(e) | {SAID_VECTOR: encode_vector(v)} for e, v in zip(events, vecs, strict=True)
            ]
            t0 = time.perf_counter()
            col = client.create_collection(
                f"pair-{n_events}-{p}-{npc}", metadata=COLLECTION_METADATA, embedding_function=None
            )
            col.add(ids=[e.id for e in events], embeddings=vecs, metadatas=meta)
            ours_seconds += time.perf_counter() - t0
            collections[(p, npc)] = col
            batch_ids += [e.id for e in events]
            batch_vecs.append(vecs)
            batch_meta += [m | {"player_id": f"p{p}", "npc_id": npc} for m in meta]
        if len(batch_ids) >= 5000 or p == N_PLAYERS - 1:
            t0 = time.perf_counter()
            naive.add(ids=batch_ids, embeddings=np.concatenate(batch_vecs), metadatas=batch_meta)
            naive_seconds += time.perf_counter() - t0
            batch_ids, batch_vecs, batch_meta = [], [], []
    print(f"  {n_events:>7d}  bulk add: per-pair layout {n_events / ours_seconds:.0f} events/s, "
          f"naive {n_events / naive_seconds:.0f} events/s")  # fmt: skip
    return collections, naive


def bench_search(embedder, texts, vectors, sizes: list[int], n_queries: int) -> None:
    import chromadb

    from memory.chroma_layout import chroma_settings, raise_open_file_limit
    from memory.config import MemoryConfig, RetrievalWeights
    from memory.embedding import MiniLMEmbedder
    from memory.store import ChromaMemoryStore

    rng = np.random.default_rng(0)
    queries = [f"{q} ({i})" for i, q in enumerate(random.Random(0).choices([
        "I've been craving hotpot lately.", "Thinking of a long hike tomorrow.", "My sister called me today.",
        "I'm so tired of work.", "Do you remember what I told you about my plans?", "I booked a flight!",
    ], k=n_queries))]  # fmt: skip
    fresh = MiniLMEmbedder(cache_size=0)
    embed_ms = []
    for q in queries:
        t0 = time.perf_counter()
        fresh.embed([q])
        embed_ms.append(1000 * (time.perf_counter() - t0))
    query_vectors = np.asarray(embedder.embed(queries), dtype=np.float32)
    print(
        f"\nquery embedding (all-MiniLM-L6-v2, CPU, uncached): p50 {pct(embed_ms, 50):.1f} ms, p95 {pct(embed_ms, 95):.1f} ms"
    )
    ours_cold = "Companion, player's first query (cold)"
    ours_raw = "per player-NPC collection (Companion): query"
    ours_full = "per player-NPC collection: store search*, vector only"
    hybrid_first = "store search*, hybrid, first (builds BM25 index)"
    hybrid_warm = "store search*, hybrid (vector + BM25)"
    naive_name = "one collection + player/NPC filter (naive)"
    with tempfile.TemporaryDirectory() as tmp:
        raise_open_file_limit()
        client = chromadb.PersistentClient(path=tmp, settings=chroma_settings())
        store = ChromaMemoryStore(client, embedder)
        vector_only = ChromaMemoryStore(client, embedder, MemoryConfig(weights=RetrievalWeights(keyword=0.0)))
        print(f"\nsearch latency, {N_PLAYERS} players x {len(NPCS)} NPCs, k=5, {n_queries} queries (ms)")
        for n_events in sizes:
            collections, naive = build_layouts(client, texts, vectors, n_events, rng)
            timings: dict[str, list[float]] = {
                ours_cold: [],
                ours_raw: [],
                naive_name: [],
                ours_full: [],
                hybrid_first: [],
                hybrid_warm: [],
            }
            targets = [(int(p), NPCS[int(p) % 2]) for p in rng.choice(N_PLAYERS, n_queries, replace=False)]
            for qv, (p, npc) in zip(query_vectors, targets, strict=True):  # each player's first query
                t0 = time.perf_counter()
                collections[(p, npc)].query(
                    query_embeddings=[qv], n_results=20, include=["metadatas", "distances"]
                )
                timings[ours_cold].append(1000 * (time.perf_counter() - t0))
            for qv, (p, npc) in zip(query_vectors, targets, strict=True):
                t0 = time.perf_counter()
                collections[(p, npc)].query(
                    query_embeddings=[qv], n_results=20, include=["metadatas", "distances"]
                )
                t1 = time.perf_counter()
                naive.query(query_embeddings=[qv], n_results=20, include=["metadatas", "distances"],
                            where={"$and": [{"player_id": f"p{p}"}, {"npc_id": npc}, {"active": True}]})  # fmt: skip
                t2 = time.perf_counter()
                timings[ours_raw].append(1000 * (t1 - t0))
                timings[naive_name].append(1000 * (t2 - t1))
            for qv, (p, npc) in zip(query_vectors, targets, strict=True):
                t0 = time.perf_counter()
                vector_only.search_by_vector(collections[(p, npc)], qv, k=5)
                timings[ours_full].append(1000 * (time.perf_counter() - t0))
            for name in (hybrid_first, hybrid_warm):
                for q, qv, (p, npc) in zip(queries, query_vectors, targets, strict=True):
                    t0 = time.perf_counter()
                    store.search_by_vector(collections[(p, npc)], qv, k=5, query_text=q)
                    timings[name].append(1000 * (time.perf_counter() - t0))
            print(f"  {'events':>7s}  {'layout':46s} {'p50':>6s} {'p95':>6s}")
            for name, values in timings.items():
                print(f"  {n_events:>7d}  {name:46s} {pct(values, 50):6.2f} {pct(values, 95):6.2f}")
            ours, naive_t = timings[ours_raw], timings[naive_name]  # both warm
            print(f"  {n_events:>7d}  naive / Companion: p50 x{pct(naive_t, 50) / pct(ours, 50):.1f}, "
                  f"p95 x{pct(naive_t, 95) / pct(ours, 95):.1f}")  # fmt: skip
        print("  * store search = the query plus implied-concern queries, superseded filtering and scoring;"
              " query embedding not included (timed above)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300, help="distinct players queried (at most 1000)")
    parser.add_argument(
        "--generative-limit", type=int, default=60, help="dev-set turns for the generative summarizer"
    )
    parser.add_argument("--skip-summarizers", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    from memory.embedding import MiniLMEmbedder

    embedder = MiniLMEmbedder(cache_size=200_000)
    print(f"memory benchmark on {os.cpu_count()} CPU cores")
    if not args.skip_summarizers:
        bench_summarizers(embedder, args.generative_limit)
    texts, vectors = event_pool(embedder)
    bench_ingest(embedder, texts)
    bench_search(embedder, texts, vectors, args.sizes, args.queries)


if __name__ == "__main__":
    main()
