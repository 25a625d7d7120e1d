"""The store against a real Chroma server (`chroma run`, started by the test on loopback)."""

import asyncio

import pytest
from services import ChromaProcess, free_port

from memory.errors import StoreUnavailableError
from memory.events import EventDraft, Turn
from memory.store import ChromaMemoryStore


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory, minilm):
    process = ChromaProcess(tmp_path_factory.mktemp("chroma-server")).start()
    yield ChromaMemoryStore.remote(process.url, minilm)
    process.stop()


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
