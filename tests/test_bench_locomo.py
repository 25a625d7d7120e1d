"""The LoCoMo harness's own logic, on a tiny conversation in LoCoMo's format written here
(the dataset itself is not in this repository): dates, evidence ids, speaker routing, recall."""

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_locomo.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_locomo", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


CONVERSATION = {
    "sample_id": "conv-test",
    "conversation": {
        "speaker_a": "Ada",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {
                "speaker": "Ada",
                "dia_id": "D1:1",
                "text": "Hi Ben! I adopted a greyhound named Pepper yesterday.",
            },
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Wow! I'm allergic to dogs though, sadly."},
        ],
        "session_2_date_time": "10:00 am on 20 June, 2023",
        "session_2": [
            {"speaker": "Ada", "dia_id": "D2:1", "text": "I started a pottery class, it's so relaxing."},
            {"speaker": "Ben", "dia_id": "D2:2", "text": "Nice. Haha."},
        ],
    },
    "qa": [
        {
            "question": "What is the name of Ada's dog?",
            "answer": "Pepper",
            "evidence": ["D1:1"],
            "category": 4,
        },
        {"question": "What is Ben allergic to?", "answer": "dogs", "evidence": ["D:1:2"], "category": 4},
        {"question": "What class did Ada start?", "answer": "pottery", "evidence": ["D2:01"], "category": 2},
        {"question": "Is there an answer?", "adversarial_answer": "no", "evidence": [], "category": 5},
    ],
}


def test_the_harness_routes_dates_and_scores_evidence(bench, tmp_path, minilm):
    from memory.fast_summarizer import FastSummarizer
    from memory.store import ChromaMemoryStore

    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([CONVERSATION]))
    [conversation] = bench.load(path, None)
    assert conversation.speakers == ("Ada", "Ben") and len(conversation.questions) == 3  # category 5 left out
    assert conversation.turns[2]["at"].day == 20 and conversation.turns[2]["at"].month == 6
    assert [bench.evidence_ids(q) for q in conversation.questions] == [{"D1:1"}, {"D1:2"}, {"D2:1"}]
    assert bench.speakers_named("What is Ben allergic to?", conversation.speakers) == ("Ben",)
    assert bench.speakers_named("Who likes tea?", conversation.speakers) == ("Ada", "Ben")

    store = ChromaMemoryStore.embedded(tmp_path / "chroma", minilm)
    seconds, turns = asyncio.run(bench.ingest([conversation], store, FastSummarizer(minilm)))
    assert turns == 4 and seconds > 0
    ada = store.list_sync(player_id=bench.player_of(conversation, "Ada"), npc_id="conv-test")
    assert any("(7 May 2023)" in e.content for e in ada)  # "yesterday", dated by its session
    figures = bench.evaluate(
        [conversation], lambda c, q: bench.search_memory(store, c, q), lambda t: len(t.split())
    )
    assert figures["recall"][4] == (1.0, 2)  # both single-hop questions find their evidence turn
    assert figures["tokens"] > 0 and figures["p95_ms"] >= figures["p50_ms"]


def test_evidence_ranks_say_where_evidence_was_lost(bench, tmp_path, minilm):
    from memory.fast_summarizer import FastSummarizer
    from memory.store import ChromaMemoryStore

    lost = {
        **CONVERSATION,
        "qa": CONVERSATION["qa"]
        + [  # Ada's dog, asked of Ben's collection only; Ben's chit-chat, which no event keeps
            {"question": "Did Ben hear about a greyhound?", "evidence": ["D1:1"], "category": 1},
            {"question": "What did Ben say to Ada about it?", "evidence": ["D2:2"], "category": 1},
            {"question": "Who laughed?", "evidence": ["D2:2"], "category": 1},
        ],
    }
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([lost]))
    conversations = bench.load(path, None)
    store = ChromaMemoryStore.embedded(tmp_path / "chroma", minilm)
    asyncio.run(bench.ingest(conversations, store, FastSummarizer(minilm)))
    ranks = bench.evidence_ranks(conversations, store)
    assert ranks[4]["top 10"] == 1.0 and ranks[2]["top 10"] == 1.0
    assert ranks[1]["other speaker only"] == pytest.approx(1 / 3)
    assert ranks[1]["no event"] == pytest.approx(2 / 3)
    assert ranks[1]["top 10"] == ranks[1]["11-40"] == ranks[1]["beyond 40"] == 0.0
    assert ranks[3] == dict.fromkeys(bench.RANK_BANDS, 0.0)  # no open-domain question: no share


def test_token_f1_is_locomos_answer_score(bench):
    assert bench.token_f1("The Pepper.", "pepper") == 1.0
    assert bench.token_f1("on 7 May 2023", "7 May 2023") == pytest.approx(2 * 3 / (4 + 3))
    assert bench.token_f1("no idea", "pottery") == 0.0


class FakeAnsweringServer:
    """An OpenAI-shaped /v1/chat/completions on loopback that answers "pottery class" and keeps
    the prompts it got: the harness's answering path without a model."""

    def __init__(self):
        import http.server
        import threading

        prompts = self.prompts = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompts.append(body["messages"][-1]["content"])
                reply = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": "pottery class"}}]}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def test_answers_are_asked_with_dated_memories_and_scored(bench, tmp_path, minilm):
    from memory.fast_summarizer import FastSummarizer
    from memory.store import ChromaMemoryStore

    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([CONVERSATION]))
    conversations = bench.load(path, None)
    store = ChromaMemoryStore.embedded(tmp_path / "chroma", minilm)
    asyncio.run(bench.ingest(conversations, store, FastSummarizer(minilm)))
    fake = FakeAnsweringServer()
    try:
        scores = bench.answer_scores(conversations, store, fake.url, "m", None)
    finally:
        fake.server.shutdown()
    assert scores[2] == (pytest.approx(2 / 3), 1) and scores[4] == (
        0.0,
        2,
    )  # right (in part) only for the class
    assert any("(20 June 2023) Ada:" in p and "pottery" in p for p in fake.prompts)
    with pytest.raises(SystemExit, match="failed"):
        bench.answer_scores(conversations, store, "http://127.0.0.1:9/v1", "m", None)
