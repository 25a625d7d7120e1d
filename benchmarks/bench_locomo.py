"""LoCoMo retrieval benchmark: does the memory layer find what long conversations said?

    .venv/bin/python benchmarks/bench_locomo.py                          # the development half (~5 min)
    .venv/bin/python benchmarks/bench_locomo.py --conversations 1 --baselines

Reads ../shared/data/locomo/locomo-dev.json (LoCoMo, Maharana et al. 2024, CC BY-NC 4.0;
read its README; never copied into this repository). Each conversation is ingested through
the memory writer the server uses (`InProcessMemoryWriter`: the fast summarizer, then the
Chroma store with consolidation): each speaker is the player of their own collection, the
conversation is the NPC (named as the other speaker, as the server names the persona, so "you"
is that speaker), one turn at a time, each turn dated by its session. Then every
question of categories 1-4 searches the collections of the speakers it names (both when it
names none), 10 events each, merged by score, best 10 kept.

Prints, per category: evidence recall@10 (the share of a question's evidence turns that are a
source of a retrieved event), then retrieved tokens per question (default model's
tokenizer), events stored per turn, ingest turns/s and search p50/p95 (query embeddings are
computed before the timed searches and reported apart). `--ranks` adds where each
category's evidence turns rank (top 10, 11-40, beyond, only in a collection not searched, in no
event): the share at 11-40 is what a re-ranker over 40 candidates could still lift. `--baselines` adds
the same figures for the raw turns searched by BM25 and by MiniLM cosine (no memory layer).
With `--answer-url URL --answer-model NAME` (any OpenAI-compatible server) each question is
also answered from Companion's retrieved memories and scored by token F1 against LoCoMo's
answer, per category (not in CI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo-dev.json"
CATEGORIES = {4: "single-hop", 2: "temporal", 1: "multi-hop", 3: "open-domain"}
EVIDENCE = re.compile(r"D:?(\d+):0*(\d+)")
K = 10


@dataclass
class Conversation:
    sample_id: str
    speakers: tuple[str, str]
    turns: list[dict]  # speaker, id ("D3:12"), text, at
    questions: list[dict] = field(default_factory=list)


def load(path: Path, limit: int | None) -> list[Conversation]:
    if not path.is_file():
        raise SystemExit(f"LoCoMo is not at {path}; see ../shared/data/locomo/README.md (not shipped here).")
    conversations = []
    for raw in json.loads(path.read_text(encoding="utf-8"))[:limit]:
        body = raw["conversation"]
        turns = []
        for n in sorted(int(k.split("_")[1]) for k in body if re.fullmatch(r"session_\d+", k)):
            at = datetime.strptime(body[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y")
            turns += [
                {"speaker": t["speaker"], "id": t["dia_id"], "text": t["text"], "at": at}
                for t in body[f"session_{n}"]
            ]
        questions = [q for q in raw["qa"] if q.get("category") in CATEGORIES]
        conversations.append(
            Conversation(raw["sample_id"], (body["speaker_a"], body["speaker_b"]), turns, questions)
        )
    return conversations


def evidence_ids(question: dict) -> set[str]:
    return {
        f"D{a}:{b}"
        for a, b in (
            EVIDENCE.match(e.strip()).groups() for e in question["evidence"] if EVIDENCE.match(e.strip())
        )
    }


def speakers_named(question: str, speakers: tuple[str, str]) -> tuple[str, ...]:
    named = tuple(s for s in speakers if re.search(rf"\b{re.escape(s)}\b", question, re.IGNORECASE))
    return named or speakers


def player_of(conversation: Conversation, speaker: str) -> str:
    return f"{conversation.sample_id}-{speaker}".lower()


async def ingest(conversations: list[Conversation], store, summarizer) -> tuple[float, int]:
    """Every turn through the server's in-process memory writer; (seconds, turns)."""
    from companion.memory_writer import InProcessMemoryWriter
    from memory.events import Turn

    writer = InProcessMemoryWriter(summarizer, store)
    started, n = time.perf_counter(), 0
    for conversation in conversations:
        for t in conversation.turns:
            turn = Turn(id=t["id"], role="player", text=t["text"], at=t["at"])
            other = next(s for s in conversation.speakers if s != t["speaker"])
            await writer.submit(
                [turn],
                player_id=player_of(conversation, t["speaker"]),
                npc_id=conversation.sample_id,
                npc_name=other,  # who "you" is, as the server passes the persona's name
            )
            n += 1
        await writer.drain()
    await writer.close()
    return time.perf_counter() - started, n


def search_memory(store, conversation: Conversation, question: str) -> list[tuple[set[str], str]]:
    """(source turn ids, text) of the best K events over the named speakers' collections."""
    return [
        (set(s.event.source_turn_ids), s.event.content) for s in best_events(store, conversation, question)
    ]


def best_events(store, conversation: Conversation, question: str, k: int = K) -> list:
    """The best k scored events over the collections of the speakers the question names."""
    found = []
    for speaker in speakers_named(question, conversation.speakers):
        found += store.search_sync(
            question, player_id=player_of(conversation, speaker), npc_id=conversation.sample_id, k=k
        )
    found.sort(key=lambda s: s.score, reverse=True)
    return found[:k]


def token_f1(predicted: str, gold: str) -> float:
    """LoCoMo's answer score: F1 of the lower-cased words, punctuation and articles removed."""

    def words(text) -> list[str]:
        return [
            w
            for w in re.sub(r"[^\w\s]", " ", str(text).lower()).split()
            if w not in ("a", "an", "the", "and")
        ]

    p, g = words(predicted), words(gold)
    same = sum((Counter(p) & Counter(g)).values())
    if not p or not g:
        return float(p == g)
    return 0.0 if same == 0 else 2 * same / (len(p) + len(g))


def answer_scores(
    conversations: list[Conversation], store, url: str, model: str, api_key: str | None
) -> dict:
    """Each question answered by an OpenAI-compatible model from the retrieved memories (each
    with the date it was told); token F1 against LoCoMo's answer, per category."""
    import httpx

    scores = defaultdict(list)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=120, headers=headers) as client:
        for c in conversations:
            for q in c.questions:
                memories = "\n".join(
                    f"- ({s.event.created_at:%d %B %Y}) {s.event.player_id.split('-')[-1].title()}: {s.event.content}"
                    for s in best_events(store, c, q["question"])
                )
                messages = [
                    {"role": "system", "content": "Answer from the memories only, in a few words. 'The player' is the "
                     "person named before the colon; dates in brackets are when it was said."},
                    {"role": "user", "content": f"Memories:\n{memories}\n\nQuestion: {q['question']}"},
                ]  # fmt: skip
                try:
                    reply = client.post("/chat/completions", json={"model": model, "messages": messages,
                                                                   "temperature": 0, "max_tokens": 32})  # fmt: skip
                    reply.raise_for_status()
                except httpx.HTTPError as e:
                    raise SystemExit(
                        f"the answering model at {url} failed ({e}); is it running, is --answer-model right?"
                    ) from e
                text = reply.json()["choices"][0]["message"]["content"] or ""
                scores[q["category"]].append(token_f1(text, q.get("answer", "")))
    return {c: (float(np.mean(scores[c])) if scores[c] else float("nan"), len(scores[c])) for c in CATEGORIES}


class RawTurns:
    """Baselines without the memory layer: the raw turns of a conversation, BM25 or cosine."""

    def __init__(self, conversation: Conversation, embedder):
        from memory.keyword_index import KeywordIndex

        self.turns = conversation.turns
        self.index = KeywordIndex([t["text"] for t in self.turns])
        self.vectors = np.asarray(embedder.embed([t["text"] for t in self.turns]), dtype=np.float32)
        self.embedder = embedder

    def bm25(self, question: str) -> list[tuple[set[str], str]]:
        return self._top(self.index.scores(question))

    def cosine(self, question: str) -> list[tuple[set[str], str]]:
        return self._top(self.vectors @ np.asarray(self.embedder.embed([question])[0], dtype=np.float32))

    def _top(self, scores: np.ndarray) -> list[tuple[set[str], str]]:
        return [({self.turns[i]["id"]}, self.turns[i]["text"]) for i in np.argsort(-scores)[:K]]


def event_sources(conversation: Conversation, store) -> dict[str, set[str]]:
    """Speaker -> the turn ids that are a source of any event in their collection."""
    return {
        speaker: {
            turn_id
            for e in store.list_sync(
                player_id=player_of(conversation, speaker), npc_id=conversation.sample_id
            )
            for turn_id in e.source_turn_ids
        }
        for speaker in conversation.speakers
    }


def evidence_with_an_event(conversations: list[Conversation], store) -> float:
    """The share of evidence turns that produced at least one stored event."""
    wanted, found = 0, 0
    for c in conversations:
        sources = set().union(*event_sources(c, store).values())
        evidence = {turn_id for q in c.questions for turn_id in evidence_ids(q)}
        wanted, found = wanted + len(evidence), found + len(evidence & sources)
    return found / max(wanted, 1)


RANK_BANDS = ("top 10", "11-40", "beyond 40", "other speaker only", "no event")


def evidence_ranks(conversations: list[Conversation], store, depth: int = 200) -> dict:
    """Where each question's evidence turns land, per category: the share ranked in the top 10,
    at 11-40 (what a re-ranker over 40 candidates could lift), beyond 40 (or only in superseded
    events), a source only of events in a collection the question does not search, or of no event
    at all (the extractor's loss). Shares of evidence turns pooled, not per question as recall is."""
    bands: dict[int, Counter] = defaultdict(Counter)
    for c in conversations:
        sources = event_sources(c, store)
        for q in c.questions:
            searched = speakers_named(q["question"], c.speakers)
            found = best_events(store, c, q["question"], k=depth)
            for turn_id in evidence_ids(q):
                rank = next((i for i, s in enumerate(found) if turn_id in s.event.source_turn_ids), None)
                if rank is not None:
                    band = RANK_BANDS[0] if rank < K else RANK_BANDS[1] if rank < 40 else RANK_BANDS[2]
                elif any(turn_id in sources[s] for s in searched):
                    band = RANK_BANDS[2]
                elif any(turn_id in ids for ids in sources.values()):
                    band = RANK_BANDS[3]
                else:
                    band = RANK_BANDS[4]
                bands[q["category"]][band] += 1
    return {
        c: {band: bands[c][band] / max(sum(bands[c].values()), 1) for band in RANK_BANDS} for c in CATEGORIES
    }


def evaluate(conversations, search, count_tokens) -> dict:
    recall, tokens, seconds = defaultdict(list), [], []
    for conversation in conversations:
        for q in conversation.questions:
            wanted = evidence_ids(q)
            started = time.perf_counter()
            found = search(conversation, q["question"])
            seconds.append(time.perf_counter() - started)
            if not wanted:
                continue
            sources = set().union(*(ids for ids, _ in found)) if found else set()
            recall[q["category"]].append(len(wanted & sources) / len(wanted))
            tokens.append(sum(count_tokens(text) for _, text in found))
    return {
        "recall": {
            c: (float(np.mean(recall[c])) if recall[c] else float("nan"), len(recall[c])) for c in CATEGORIES
        },
        "tokens": float(np.mean(tokens)),
        "p50_ms": 1000 * float(np.percentile(seconds, 50)),
        "p95_ms": 1000 * float(np.percentile(seconds, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--conversations", type=int, default=None, help="the first N (default: all 5)")
    parser.add_argument("--baselines", action="store_true", help="also raw turns by BM25 and by cosine")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--ranks",
        action="store_true",
        help="also where the evidence turns rank (what a re-ranker could reach)",
    )
    parser.add_argument(
        "--answer-url", help="an OpenAI-compatible /v1 URL: also answer each question and score it"
    )
    parser.add_argument("--answer-model", default="default", help="the model name to send (default: default)")
    parser.add_argument(
        "--answer-key-env", default="OPENAI_API_KEY", help="env var holding its API key, if any"
    )
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from companion.backbone.provision import prepare_default_model
    from memory.config import MemoryConfig, RetrievalWeights
    from memory.embedding import MiniLMEmbedder
    from memory.fast_summarizer import FastSummarizer
    from memory.store import ChromaMemoryStore

    conversations = load(args.data, args.conversations)
    tokenizer = AutoTokenizer.from_pretrained(prepare_default_model().dense_dir, local_files_only=True)
    count_tokens = lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    embedder = MiniLMEmbedder()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        store = ChromaMemoryStore.embedded(scratch, embedder)
        seconds, n_turns = asyncio.run(ingest(conversations, store, FastSummarizer(embedder)))
        n_events = sum(
            store.count(player_id=player_of(c, s), npc_id=c.sample_id)
            for c in conversations
            for s in c.speakers
        )
        questions = [q["question"] for c in conversations for q in c.questions]
        started = time.perf_counter()
        embedder.embed(questions)  # cached: the rows below time the search, not the query's embedding
        embed_ms = 1000 * (time.perf_counter() - started) / len(questions)
        dense_only = ChromaMemoryStore(
            store.client, embedder, MemoryConfig(weights=RetrievalWeights(keyword=0.0))
        )
        rows["Companion"] = evaluate(conversations, lambda c, q: search_memory(store, c, q), count_tokens)
        rows["Companion, no keyword search"] = evaluate(
            conversations, lambda c, q: search_memory(dense_only, c, q), count_tokens
        )
        coverage = evidence_with_an_event(conversations, store)
        ranks = evidence_ranks(conversations, store) if args.ranks else None
        answers = (
            answer_scores(
                conversations, store, args.answer_url, args.answer_model, os.environ.get(args.answer_key_env)
            )
            if args.answer_url
            else None
        )
    if args.baselines:
        raw = {c.sample_id: RawTurns(c, embedder) for c in conversations}
        rows["raw turns, BM25"] = evaluate(conversations, lambda c, q: raw[c.sample_id].bm25(q), count_tokens)
        rows["raw turns, MiniLM cosine"] = evaluate(
            conversations, lambda c, q: raw[c.sample_id].cosine(q), count_tokens
        )
    n_questions = sum(len(c.questions) for c in conversations)
    print(
        f"\nLoCoMo development half: {len(conversations)} conversations, {n_turns} turns, {n_questions} questions (categories 1-4)"
    )
    print(
        f"ingest: {n_turns / seconds:.1f} turns/s; {n_events} events stored ({n_events / n_turns:.2f} per turn)"
    )
    print(f"evidence turns that are the source of any stored event: {coverage:.2f} (the ceiling of recall)")
    print(
        f"query embedding (MiniLM, batched, not in the search times below): {embed_ms:.1f} ms per question\n"
    )
    print("| evidence recall@10 | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for c, name in CATEGORIES.items():
        n = next(iter(rows.values()))["recall"][c][1]
        print(f"| {c} {name} ({n}) | " + " | ".join(f"{r['recall'][c][0]:.3f}" for r in rows.values()) + " |")
    print("| retrieved tokens / question | " + " | ".join(f"{r['tokens']:.0f}" for r in rows.values()) + " |")
    print(
        "| search p50 / p95 ms | "
        + " | ".join(f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f}" for r in rows.values())
        + " |"
    )
    if ranks:
        print("\nwhere the evidence turns rank (share of each category's evidence turns):")
        print("| category | " + " | ".join(RANK_BANDS) + " |")
        print("|---|" + "---|" * len(RANK_BANDS))
        for c, name in CATEGORIES.items():
            print(f"| {c} {name} | " + " | ".join(f"{ranks[c][band]:.3f}" for band in RANK_BANDS) + " |")
    if answers:
        print(f"\nanswers by {args.answer_model} at {args.answer_url} from Companion's memories, token F1:")
        for c, name in CATEGORIES.items():
            print(f"  {c} {name} ({answers[c][1]}): {answers[c][0]:.3f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "turns": n_turns,
                    "events": n_events,
                    "ingest_s": seconds,
                    "coverage": coverage,
                    "evidence_ranks": ranks,
                    "answer_f1": answers,
                    "rows": rows,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
