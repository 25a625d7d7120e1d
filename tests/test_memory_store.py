"""The Chroma memory store, embedded (PersistentClient), with the real local embedder."""

import asyncio
import json
import subprocess
import sys
from datetime import timedelta

import pytest

from memory.chroma_layout import collection_name, player_prefix, segment_dirs
from memory.config import ForgettingPolicy, MemoryConfig, RetrievalWeights
from memory.events import EventDraft, Turn, utcnow
from memory.fast_summarizer import FastSummarizer
from memory.store import ChromaMemoryStore


def run(coro):
    return asyncio.run(coro)


def draft(kind, content, importance=5, slot=None):
    return EventDraft(type=kind, content=content, importance=importance, slot=slot)


def turn(tid, text="...", days_ago=0.0):
    return Turn(id=tid, role="player", text=text, at=utcnow() - timedelta(days=days_ago))


def test_isolation_between_players_with_overlapping_content(embedded_store):
    for player in ("alice", "bob"):
        run(
            embedded_store.add(
                [draft("health", f"The player has asthma, says {player}.", 8)],
                player_id=player,
                npc_id="mira",
                turns=[turn(f"{player}-1")],
            )
        )
        run(
            embedded_store.add(
                [draft("preference", "The player loves spicy food.")],
                player_id=player,
                npc_id="mira",
                turns=[turn(f"{player}-2")],
            )
        )
    for player, other in (("alice", "bob"), ("bob", "alice")):
        found = run(embedded_store.search("asthma and spicy food", player_id=player, npc_id="mira", k=10))
        assert len(found) == 2
        assert all(s.event.player_id == player for s in found)
        assert not any(other in s.event.content for s in found)
        listed = run(embedded_store.list(player_id=player))
        assert {e.player_id for e in listed} == {player}
    # the isolation is structural: each player-NPC pair is a separate Chroma collection
    names = {c.name for c in embedded_store.client.list_collections()}
    assert names == {collection_name("alice", "mira"), collection_name("bob", "mira")}
    assert run(embedded_store.search("asthma", player_id="carol", npc_id="mira")) == []


def test_related_finds_the_facts_near_a_text_with_superseded_ones_and_their_replacements(embedded_store):
    """What the post-check reads instead of the whole collection (issue 15)."""
    store = embedded_store
    store.add_sync([draft("personal_info", "The player lives in Paris.", 6, slot="home")], player_id="alice",
                   npc_id="mira", turns=[turn("a1", days_ago=9)])  # fmt: skip
    store.add_sync([draft("personal_info", "The player lives in Berlin.", 6, slot="home")], player_id="alice",
                   npc_id="mira", turns=[turn("a2", days_ago=1)])  # fmt: skip
    store.add_sync([draft("preference", "The player loves fishing.")], player_id="alice", npc_id="mira",
                   turns=[turn("a3")])  # fmt: skip
    store.add_sync([draft("health", "The player is allergic to Paris pollen.")], player_id="bob", npc_id="mira",
                   turns=[turn("b1")])  # fmt: skip
    found = run(store.related(["How is life in Paris?"], player_id="alice", npc_id="mira", k=1))
    by_content = {e.content: e for e in found}
    paris = by_content["The player lives in Paris."]
    assert not paris.active and by_content["The player lives in Berlin."].id == paris.superseded_by
    assert {e.player_id for e in found} == {"alice"}  # never another player's facts
    assert run(store.related(["fishing"], player_id="carol", npc_id="mira")) == []
    assert run(store.related([], player_id="alice", npc_id="mira")) == []


def test_npcs_are_separate_within_a_player(embedded_store):
    run(
        embedded_store.add(
            [draft("plan", "The player has a driving test next Friday.", 7)],
            player_id="p",
            npc_id="mira",
            turns=[turn("1")],
        )
    )
    assert run(embedded_store.search("driving test", player_id="p", npc_id="rex")) == []
    assert len(run(embedded_store.search("driving test", player_id="p", npc_id="mira"))) == 1


def test_the_same_fact_told_twice_becomes_one_event(embedded_store):
    first = run(
        embedded_store.add(
            [draft("health", "The player has a really sensitive stomach.", 8)],
            player_id="p",
            npc_id="mira",
            turns=[turn("1")],
        )
    )
    again = run(
        embedded_store.add(
            [draft("health", "The player's stomach is very sensitive.", 8)],
            player_id="p",
            npc_id="mira",
            turns=[turn("2")],
        )
    )
    assert first[0].action == "created" and again[0].action == "merged"
    events = run(embedded_store.list(player_id="p"))
    assert len(events) == 1
    assert events[0].mention_count == 2 and events[0].source_turn_ids == ["1", "2"]


def test_different_facts_of_one_type_stay_apart(embedded_store):
    run(
        embedded_store.add(
            [draft("preference", "The player loves spicy food.")],
            player_id="p",
            npc_id="mira",
            turns=[turn("1")],
        )
    )
    run(
        embedded_store.add(
            [draft("preference", "The player hates crowds.")], player_id="p", npc_id="mira", turns=[turn("2")]
        )
    )
    assert len(run(embedded_store.list(player_id="p"))) == 2


def test_a_changed_fact_supersedes_the_old_one(embedded_store):
    old = run(
        embedded_store.add(
            [draft("personal_info", "The player lives in Paris.", 6, "home")],
            player_id="p",
            npc_id="mira",
            turns=[turn("1", days_ago=30)],
        )
    )[0].event
    write = run(
        embedded_store.add(
            [draft("personal_info", "The player just moved to Berlin.", 6, "home")],
            player_id="p",
            npc_id="mira",
            turns=[turn("2")],
        )
    )[0]
    assert write.action == "superseded" and write.replaced == old.id and write.event.supersedes == old.id
    current = run(embedded_store.search("where does the player live", player_id="p", npc_id="mira", k=5))
    assert [s.event.content for s in current] == ["The player just moved to Berlin."]
    history = run(
        embedded_store.search(
            "where does the player live", player_id="p", npc_id="mira", k=5, include_superseded=True
        )
    )
    retired = next(s.event for s in history if s.event.id == old.id)
    assert retired.superseded_by == write.event.id and not retired.active


def test_vegetarian_then_steak_resolves_through_the_fast_summarizer(embedded_store, minilm):
    summarizer = FastSummarizer(minilm)
    for tid, text, days in (
        ("1", "I'm a vegetarian.", 40),
        ("2", "I've started eating meat again, steak is great.", 0),
    ):
        drafts = run(summarizer.summarize([turn(tid, text, days)]))
        run(embedded_store.add(drafts, player_id="p", npc_id="mira", turns=[turn(tid, text, days)]))
    active = run(embedded_store.list(player_id="p", include_superseded=False))
    diet = [e for e in active if e.slot == "diet"]
    assert len(diet) == 1 and "meat" in diet[0].content
    assert len(run(embedded_store.list(player_id="p"))) > len(active)  # the old fact is kept, retired


def test_a_retried_write_changes_nothing(embedded_store):
    drafts = [
        draft("plan", "The player has a job interview on Monday.", 7),
        draft("emotion", "The player feels nervous.", 6),
    ]
    turns = [turn("t-42")]
    first = run(embedded_store.add(drafts, player_id="p", npc_id="mira", turns=turns))
    retry = run(embedded_store.add(drafts, player_id="p", npc_id="mira", turns=turns))
    assert [w.action for w in first] == ["created", "created"]
    assert [w.action for w in retry] == ["unchanged", "unchanged"]
    events = run(embedded_store.list(player_id="p"))
    assert len(events) == 2 and all(e.mention_count == 1 for e in events)


def test_retried_merge_does_not_count_twice(embedded_store):
    run(
        embedded_store.add(
            [draft("health", "The player has asthma.", 8)], player_id="p", npc_id="mira", turns=[turn("1")]
        )
    )
    for _ in range(2):
        run(
            embedded_store.add(
                [draft("health", "The player has asthma!", 8)],
                player_id="p",
                npc_id="mira",
                turns=[turn("2")],
            )
        )
    assert run(embedded_store.list(player_id="p"))[0].mention_count == 2


def _delete_victim(tmp_path, minilm, secret):
    store = ChromaMemoryStore.embedded(tmp_path / "chroma", minilm)
    run(
        store.add(
            [draft("personal_info", f"The player was born on {secret} street.", 6)],
            player_id="victim",
            npc_id="mira",
            turns=[turn("1")],
        )
    )
    run(
        store.add(
            [draft("personal_info", "The player was born in Oslo.", 6)],
            player_id="other",
            npc_id="mira",
            turns=[turn("2")],
        )
    )
    assert _files_containing(tmp_path, secret)  # it was written
    victim_segments = segment_dirs(store.sqlite_path, store._collections_of("victim", None))
    assert victim_segments
    assert run(store.delete(player_id="victim")) == 1
    return store, victim_segments


def test_hard_delete_leaves_nothing_searchable_and_no_record_or_index_on_disk(tmp_path, minilm):
    secret = "Zanzibarian"
    store, victim_segments = _delete_victim(tmp_path, minilm, secret)
    assert run(store.search(secret, player_id="victim", npc_id="mira")) == []
    assert run(store.list(player_id="victim")) == []
    database = tmp_path / "chroma" / "chroma.sqlite3"
    assert secret.encode() not in database.read_bytes()
    assert player_prefix("victim").encode() not in database.read_bytes()
    assert not any(d.exists() for d in victim_segments)
    assert len(run(store.list(player_id="other"))) == 1  # others untouched
    reopened = ChromaMemoryStore.embedded(tmp_path / "chroma", minilm)
    assert reopened.list_sync(player_id="victim") == [] and len(reopened.list_sync(player_id="other")) == 1


LEAK_SCENARIO = """
import asyncio, sys, tempfile
from pathlib import Path
from memory.heap_hygiene import reexec_with_heap_scrubbing
if sys.argv[1] == "scrubbed":
    reexec_with_heap_scrubbing()  # what the companion and companion-server entry points do first
from memory.embedding import MiniLMEmbedder
from memory.events import EventDraft, Turn
from memory.store import ChromaMemoryStore
embedder, leaks = MiniLMEmbedder(), 0
for i in range(int(sys.argv[2])):
    root = Path(tempfile.mkdtemp(dir=sys.argv[3]))
    store = ChromaMemoryStore.embedded(root, embedder)
    secret = f"Zanzibarian{i}q"
    for player, text in (("victim", f"The player was born on {secret} street."), ("other", "The player was born in Oslo.")):
        draft = EventDraft(type="personal_info", content=text, importance=6)
        asyncio.run(store.add([draft], player_id=player, npc_id="mira", turns=[Turn(id=f"{player}{i}", role="player", text="x")]))
    asyncio.run(store.delete(player_id="victim"))
    leaks += any(secret.encode() in p.read_bytes() for p in root.rglob("*") if p.is_file())
print("leaks", leaks)
"""


def _leaks(mode, n, tmp_path, env):
    out = subprocess.run(
        [sys.executable, "-c", LEAK_SCENARIO, mode, str(n), str(tmp_path)], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


def test_hard_delete_leaves_no_byte_of_the_player_anywhere_on_disk(tmp_path, subprocess_env):
    """Without heap scrubbing, other collections' length.bin files recycle freed heap holding the deleted
    player's JSON (about one run in five here); the entry points' heap scrubbing closes that. 20 runs:
    an unscrubbed process passing all 20 by chance is about a 1% event."""
    assert _leaks("scrubbed", 20, tmp_path, subprocess_env) == 0


def test_heap_scrubbing_restarts_once_and_keeps_other_tunables(subprocess_env):
    code = (
        "import os; from memory.heap_hygiene import reexec_with_heap_scrubbing as r; r(); "
        "print(os.environ['MALLOC_PERTURB_'], os.environ['GLIBC_TUNABLES'])"
    )
    env = {**subprocess_env, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.split() == ["165", "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0"]
    env["COMPANION_HEAP_SCRUB"] = "0"
    out = subprocess.run([sys.executable, "-c", code.replace("print(os.environ['MALLOC_PERTURB_'], ", "print(")],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert out.stdout.split() == ["glibc.malloc.arena_max=2"]


def test_delete_one_npc_keeps_the_others(embedded_store):
    for npc in ("mira", "rex"):
        run(
            embedded_store.add(
                [draft("plan", f"The player will visit {npc}.", 5)],
                player_id="p",
                npc_id=npc,
                turns=[turn(npc)],
            )
        )
    assert run(embedded_store.delete(player_id="p", npc_id="mira")) == 1
    assert [e.npc_id for e in run(embedded_store.list(player_id="p"))] == ["rex"]


def test_export_is_json_with_every_event_including_superseded(embedded_store):
    run(
        embedded_store.add(
            [draft("personal_info", "The player lives in Paris.", 6, "home")],
            player_id="p",
            npc_id="mira",
            turns=[turn("1")],
        )
    )
    run(
        embedded_store.add(
            [draft("personal_info", "The player moved to Rome.", 6, "home")],
            player_id="p",
            npc_id="mira",
            turns=[turn("2")],
        )
    )
    exported = json.loads(json.dumps(run(embedded_store.export(player_id="p"))))
    assert exported["player_id"] == "p" and len(exported["events"]) == 2
    assert {e["content"] for e in exported["events"]} == {
        "The player lives in Paris.",
        "The player moved to Rome.",
    }


def test_forgetting_policy_removes_faded_unimportant_events_only(embedded_store):
    run(
        embedded_store.add(
            [draft("preference", "The player likes the colour green.", 3)],
            player_id="p",
            npc_id="mira",
            turns=[turn("1", days_ago=120)],
        )
    )
    run(
        embedded_store.add(
            [draft("health", "The player has a weak heart.", 9)],
            player_id="p",
            npc_id="mira",
            turns=[turn("2", days_ago=120)],
        )
    )
    run(
        embedded_store.add(
            [draft("preference", "The player likes rainy days.", 3)],
            player_id="p",
            npc_id="mira",
            turns=[turn("3")],
        )
    )
    forgotten = run(embedded_store.forget(player_id="p", policy=ForgettingPolicy()))
    remaining = {e.content for e in run(embedded_store.list(player_id="p"))}
    assert len(forgotten) == 1
    assert remaining == {"The player has a weak heart.", "The player likes rainy days."}


def test_scores_are_the_weighted_sum_of_their_parts(tmp_path, minilm):
    weights = RetrievalWeights(relevance=2.0, recency=0.25, importance=1.0)
    store = ChromaMemoryStore.embedded(tmp_path / "c", minilm, MemoryConfig(weights=weights))
    run(
        store.add(
            [draft("plan", "The player has an exam tomorrow.", 7)],
            player_id="p",
            npc_id="n",
            turns=[turn("1", days_ago=1)],
        )
    )
    [hit] = run(store.search("exam", player_id="p", npc_id="n"))
    p = hit.parts
    assert 0 < p.relevance <= 1 and 0 < p.recency < 1 and p.importance == 0.7
    assert p.keyword == 1.0  # "exam" is its only keyword hit, so the best one
    assert 0 < p.said <= 1 and p.said != p.relevance  # the player's words, not the fact
    assert hit.score == pytest.approx(
        2.0 * p.relevance + 0.25 * p.recency + 1.0 * p.importance + 0.5 * p.keyword + 1.0 * p.said
    )
    assert p.recency == pytest.approx(0.995**24, rel=1e-3)


def test_sensitive_stomach_then_hotpot_a_week_later(embedded_store, minilm):
    """DESIGN's canonical case, end to end: fast summarizer -> store -> recall."""
    summarizer = FastSummarizer(minilm)
    session_one = [
        turn("s1-1", "I have a really sensitive stomach.", days_ago=7),
        turn("s1-2", "I love spicy food though, and I have a dog named Rex.", days_ago=7),
        turn("s1-3", "I have a driving test next Friday.", days_ago=7),
        turn("s1-4", "I work as a nurse.", days_ago=7),
    ]
    for t in session_one:
        run(
            embedded_store.add(
                run(summarizer.summarize([t], npc_name="Mira")), player_id="p", npc_id="mira", turns=[t]
            )
        )
    stored = run(embedded_store.list(player_id="p"))
    assert {e.type for e in stored} >= {"health", "preference", "relationship", "plan", "personal_info"}
    found = run(embedded_store.search("I've been craving hotpot lately.", player_id="p", npc_id="mira", k=3))
    assert found[0].event.type == "health"
    assert "stomach" in found[0].event.content


def _files_containing(root, needle: str) -> list[str]:
    data = needle.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def test_the_players_own_words_bring_back_a_fact_that_lost_its_subject(tmp_path, minilm):
    store = ChromaMemoryStore.embedded(tmp_path / "c", minilm)
    told = Turn(
        role="player", text="I finished that memoir about a transgender girl. It taught me self-acceptance."
    )
    run(store.add([draft("life_event", "It taught the player self-acceptance.", 5)], player_id="p", npc_id="n",
                  turns=[told]))  # fmt: skip
    run(store.add([draft("preference", "The player likes to bake bread.", 5)], player_id="p", npc_id="n",
                  turns=[Turn(role="player", text="I like to bake bread.")]))  # fmt: skip
    [hit, other] = run(store.search("Which biography of a trans teenager?", player_id="p", npc_id="n"))
    assert hit.event.content.startswith("It taught") and hit.parts.said > hit.parts.relevance + 0.1
    # an event stored before the words' embedding was kept counts its own relevance instead
    legacy = store.client.get_collection(store._collection("p", "n", create=False).name)
    legacy.update(ids=[other.event.id], metadatas=[{"said_vector": ""}])
    again = {h.event.id: h for h in run(store.search("bread", player_id="p", npc_id="n"))}
    assert again[other.event.id].parts.said == again[other.event.id].parts.relevance


def test_a_search_brings_one_fact_per_line_the_player_said(tmp_path, minilm):
    store = ChromaMemoryStore.embedded(tmp_path / "c", minilm)
    both = Turn(role="player", text="I have a sensitive stomach, and I love spicy food.")
    run(store.add([draft("health", "The player has a sensitive stomach.", 8),
                   draft("preference", "The player loves spicy food.", 5)], player_id="p", npc_id="n",
                  turns=[both]))  # fmt: skip
    run(store.add([draft("relationship", "The player's sister Ana is getting married.", 6)], player_id="p",
                  npc_id="n", turns=[Turn(role="player", text="My sister Ana is getting married.")]))  # fmt: skip
    found = run(store.search("spicy hotpot tonight?", player_id="p", npc_id="n", k=3))
    assert len(found) == 2 and len({tuple(h.event.source_turn_ids) for h in found}) == 2
    every = ChromaMemoryStore(store.client, minilm, MemoryConfig(one_per_line=False))
    assert len(run(every.search("spicy hotpot tonight?", player_id="p", npc_id="n", k=3))) == 3
