"""Keyword search beside the vector search: BM25 over a player's facts (issue 13, retrieval)."""

import hashlib

import numpy as np

from memory.config import MemoryConfig, RetrievalWeights
from memory.events import EventDraft
from memory.keyword_index import KeywordIndex, terms
from memory.store import ChromaMemoryStore


class FakeMeaninglessEmbedder:
    """Unrelated random unit vectors for every text: the vector search finds nothing on purpose."""

    dimension = 128

    def embed(self, texts):
        out = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dimension)
            out.append((vector / np.linalg.norm(vector)).tolist())
        return out


def test_bm25_prefers_the_rare_shared_word_and_stems_word_forms():
    index = KeywordIndex(
        [
            "The player went hiking with friends.",
            "The player loves friends and food.",
            "The player has asthma.",
        ]
    )
    assert [i for i, _ in index.top("Did my friends like the hike?", 3)] == [0, 1]
    assert index.top("asthma", 3)[0][0] == 2
    assert index.top("quantum chromodynamics", 3) == []
    assert terms("Paintings she painted") == ["paint", "paint"] == terms("painting, paint")


def test_a_fact_the_vector_search_misses_is_found_by_its_words(tmp_path):
    store = ChromaMemoryStore.embedded(
        tmp_path, FakeMeaninglessEmbedder(), MemoryConfig(candidates_per_result=1)
    )
    facts = [f"The player owns {n} goats and a red barn number {n}." for n in range(30)]
    facts.append("The player's cousin Bartholomew lives by the sea.")
    store.add_sync(
        [EventDraft(type="relationship", content=f, importance=5) for f in facts], player_id="p", npc_id="m"
    )
    blind = ChromaMemoryStore(
        store.client,
        store.embedder,
        MemoryConfig(candidates_per_result=1, weights=RetrievalWeights(keyword=0)),
    )
    query = "Any word from Bartholomew?"
    assert "Bartholomew" not in blind.search_sync(query, player_id="p", npc_id="m", k=1)[0].event.content
    found = store.search_sync(query, player_id="p", npc_id="m", k=1)[0]
    assert "Bartholomew" in found.event.content and found.parts.keyword == 1.0


def test_the_keyword_index_follows_writes_and_forgets_a_deleted_player(tmp_path):
    store = ChromaMemoryStore.embedded(
        tmp_path, FakeMeaninglessEmbedder(), MemoryConfig(candidates_per_result=1)
    )
    store.add_sync([EventDraft(type="preference", content="The player loves herring.", importance=5)],
                   player_id="p", npc_id="m")  # fmt: skip
    assert store.search_sync("herring", player_id="p", npc_id="m", k=1)[0].parts.keyword == 1.0
    store.add_sync(
        [EventDraft(type="health", content="The player has gout.", importance=5)], player_id="p", npc_id="m"
    )
    assert (
        "gout" in store.search_sync("gout again", player_id="p", npc_id="m", k=1)[0].event.content
    )  # rebuilt
    held = len(store._keywords._indexes)
    store.delete_sync(player_id="p")
    assert held == 1 and len(store._keywords._indexes) == 0  # the deleted player's words are not held
    assert store.search_sync("gout", player_id="p", npc_id="m") == []


def test_the_keyword_indexes_stay_within_their_event_budget(tmp_path):
    from memory.queries import KeywordIndexes

    store = ChromaMemoryStore.embedded(tmp_path, FakeMeaninglessEmbedder())
    store._keywords = KeywordIndexes(max_events=5)
    for player in ("a", "b", "c"):
        drafts = [
            EventDraft(type="preference", content=f"The player likes {w}.", importance=5) for w in "xyz"
        ]
        store.add_sync(drafts, player_id=player, npc_id="m")
        assert store.search_sync("likes", player_id=player, npc_id="m", k=1)
    assert len(store._keywords._indexes) == 1  # 3 events each: only the latest collection fits in 5


def test_a_player_whose_every_fact_was_taken_back_is_searched_without_error(tmp_path):
    # The load script found this: 7 of 40 replies failed while a collection existed with no events.
    store = ChromaMemoryStore.embedded(tmp_path, FakeMeaninglessEmbedder())
    writes = store.add_sync(
        [EventDraft(type="preference", content="The player loves herring.", importance=5)],
        player_id="p",
        npc_id="m",
    )
    assert store.retract_sync(writes, player_id="p", npc_id="m") == 1
    assert store.search_sync("herring", player_id="p", npc_id="m") == []


def test_a_word_the_fact_lost_is_found_in_the_players_own_words(tmp_path):
    from memory.events import Turn

    store = ChromaMemoryStore.embedded(tmp_path, FakeMeaninglessEmbedder())
    line = Turn(role="player", text="Took my niece to see the Rockettes, she loved it!")
    reply = Turn(role="npc", text="The Rockettes? How grand.")
    draft = EventDraft(type="relationship", content="The player took their niece to a show.", importance=5)
    writes = store.add_sync([draft], player_id="p", npc_id="m", turns=[line, reply])
    assert writes[0].event.said == line.text  # the player's words, not the NPC's
    found = store.search_sync("What did I see with the Rockettes?", player_id="p", npc_id="m", k=1)
    assert found and found[0].event.content == draft.content and found[0].parts.keyword == 1.0
    again = Turn(role="player", text="My niece still hums the Rockettes tunes, the darling.")
    merged = store.add_sync([draft], player_id="p", npc_id="m", turns=[again])[0]
    assert merged.action == "merged" and merged.event.said == f"{line.text} {again.text}"
