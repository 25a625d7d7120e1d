"""The extraction benchmark's held-out set and its scoring (the summarizer itself: test_summarizers)."""

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_extraction import SET, carries, score_line, summary  # noqa: E402


def test_the_heldout_set_has_300_lines_of_every_failure_kind():
    items = yaml.safe_load(SET.read_text(encoding="utf-8"))
    assert len(items) >= 300
    kinds = {i["kind"] for i in items}
    assert kinds >= {
        "compound",
        "we",
        "aside",
        "correction",
        "multi",
        "third_party",
        "question",
        "relative_date",
        "pronoun",
    }
    assert len({i["text"] for i in items}) == len(items)
    assert all(i["facts"] == [] for i in items if i["kind"] in ("question", "chit_chat"))


def test_a_fact_is_carried_only_when_all_its_words_are_in_one_event():
    assert carries("The player had surgery on 15 May 2023.", ["surg", "15 may"])
    assert not carries("The player had surgery.", ["surg", "15 may"])
    assert not carries("The player's wife.", ["wife", "farmhouse"])


def test_scoring_counts_missed_facts_and_invented_events():
    we = {"kind": "we", "text": "We adopted a dog.", "facts": [["adopted", "dog"]], "invented": ["and mira"]}
    shared = score_line(we, ["The player and Mira adopted a dog."])
    assert (shared.found, shared.invented) == (1, 1)
    chat = score_line({"kind": "chit_chat", "text": "Ha!", "facts": []}, ["The player laughs."])
    assert chat.invented == 1
    vegan = {"kind": "pronoun", "text": "...", "facts": [["vegan"], ["happy", "vegan"]]}
    half = score_line(vegan, ["The player is vegan.", "The player is happy about it."])
    result = summary([shared, chat, half])
    assert result["fact_recall"] == 100 * 2 / 3
    assert result["invented"] == 100 * 2 / 4
    assert result["resolved"] == 50.0
