"""The store against a real Chroma server (`chroma run`, started by the test on loopback)."""

import asyncio

import pytest
from services import ChromaProcess, free_port

from memory.errors import StoreUnavailableError
from memory.events import EventDraft, Turn
from memory.store import ChromaMemoryStore


@pytest.fixture(scope="module")
def chroma_process(tmp_path_factory):
    process = ChromaProcess(tmp_path_factory.mktemp("chroma-server")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def chroma_server(chroma_process, minilm):
    return ChromaMemoryStore.remote(chroma_process.url, minilm)


def run(coro):
    return asyncio.run(coro)


def test_isolation_duplicates_supersession_and_delete_on_a_server(chroma_server):
    store = chroma_server
    for player in ("ann", "ben"):
        run(
            store.add(
                [EventDraft(type="health", content="The player has asthma.", importance=8)],
                player_id=player,
                npc_id="mira",
                turns=[Turn(id=f"{player}1", role="player", text="x")],
            )
        )
    run(
        store.add(
            [EventDraft(type="health", content="The player has asthma!", importance=8)],
            player_id="ann",
            npc_id="mira",
            turns=[Turn(id="ann2", role="player", text="x")],
        )
    )
    run(
        store.add(
            [
                EventDraft(
                    type="personal_info", content="The player lives in Oslo.", importance=6, slot="home"
                )
            ],
            player_id="ann",
            npc_id="mira",
            turns=[Turn(id="ann3", role="player", text="x")],
        )
    )
    write = run(
        store.add(
            [
                EventDraft(
                    type="personal_info", content="The player moved to Rome.", importance=6, slot="home"
                )
            ],
            player_id="ann",
            npc_id="mira",
            turns=[Turn(id="ann4", role="player", text="x")],
        )
    )[0]
    assert write.action == "superseded"

    ann = run(store.search("asthma", player_id="ann", npc_id="mira", k=10))
    assert {s.event.player_id for s in ann} == {"ann"}
    assert [s.event.mention_count for s in ann if s.event.type == "health"] == [2]
    assert "Oslo" not in " ".join(s.event.content for s in ann)

    assert run(store.delete(player_id="ann")) == 3
    assert run(store.search("asthma", player_id="ann", npc_id="mira")) == []
    assert len(run(store.list(player_id="ben"))) == 1


def test_unreachable_server_is_a_clear_error(minilm):
    with pytest.raises(StoreUnavailableError, match="could not reach the Chroma server"):
        ChromaMemoryStore.remote(f"http://127.0.0.1:{free_port()}", minilm)
    with pytest.raises(StoreUnavailableError, match="not an http"):
        ChromaMemoryStore.remote("chroma.local:8000", minilm)


def test_telemetry_is_off(chroma_server):
    assert chroma_server.client.get_settings().anonymized_telemetry is False


def test_a_collection_deleted_by_another_process_is_looked_up_again(chroma_server, chroma_process, minilm):
    """Two server processes share a Chroma server: after one hard-deletes a player, the other's
    cached collection handle was stale and every search and write of that player failed
    (NotFoundError, seen in the soak) until a restart."""
    here, there = chroma_server, ChromaMemoryStore.remote(chroma_process.url, minilm)
    told = [Turn(id="st-1", role="player", text="I have a dog named Rex.")]
    draft = EventDraft(type="relationship", content="The player has a dog named Rex.", importance=5)
    run(here.add([draft], player_id="stale", npc_id="mira", turns=told))
    assert run(there.search("dog", player_id="stale", npc_id="mira"))  # `there` caches the handle
    assert run(here.delete(player_id="stale")) == 1
    assert run(there.search("dog", player_id="stale", npc_id="mira")) == []
    assert run(there.list(player_id="stale", npc_id="mira")) == []
    again = [Turn(id="st-2", role="player", text="My cat is named Pebble.")]
    cat = EventDraft(type="relationship", content="The player's cat is named Pebble.", importance=5)
    [write] = run(there.add([cat], player_id="stale", npc_id="mira", turns=again))
    assert write.action == "created"
    assert [e.content for e in run(here.list(player_id="stale"))] == [cat.content]
