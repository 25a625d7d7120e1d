"""Both summarizers: the fast default against the dev set, the generative one's JSON handling."""

import asyncio
import json

import numpy as np
import pytest

from memory.errors import SummarizerWeightsError
from memory.events import EVENT_TYPES, Turn
from memory.fast_summarizer import NONE, FastSummarizer, split_sentences
from memory.generative_summarizer import GenerativeSummarizer, drafts_from_json, repair_json
from memory.rewrite import detect_slot, restore_dropped_subject, to_third_person
from training.classifiers.fast_summarizer import LABELS
from training.classifiers.linear import per_class_report
from training.common import EVAL_DATA
from training.data.summarizer_examples import build_dataset

DEV = [json.loads(line) for line in (EVAL_DATA / "memory_dev_set.jsonl").read_text().splitlines()]


def predict(summarizer, text: str) -> str:
    drafts = asyncio.run(summarizer.summarize([Turn(role="player", text=text)], npc_name="Mira"))
    return str(drafts[0].type) if drafts else NONE


def test_dev_set_is_large_labelled_and_disjoint_from_training_data():
    assert len(DEV) >= 150
    labels = {row["label"] for row in DEV}
    assert labels == set(EVENT_TYPES) | {NONE}
    training = {text for text, _ in build_dataset(400)}
    assert not [row["text"] for row in DEV if row["text"] in training]


def test_fast_summarizer_macro_f1_on_the_dev_set(minilm):
    summarizer = FastSummarizer(minilm)
    predicted = [predict(summarizer, row["text"]) for row in DEV]
    report = per_class_report([row["label"] for row in DEV], predicted, LABELS)
    assert report["macro_f1"]["f1"] >= 0.85, {k: round(v["f1"], 2) for k, v in report.items()}


def test_a_fact_is_kept_when_no_single_type_is_sure_of_it(minilm):
    """The decision is "fact or chit-chat?" first: lines split between several event types were
    dropped as chit-chat (122 of the 139 dev-set facts gave an event; 137 now), while chit-chat
    stays out (0 of 24 before, 1 now)."""
    summarizer = FastSummarizer(minilm)
    facts = [row["text"] for row in DEV if row["label"] != NONE]
    chat = [row["text"] for row in DEV if row["label"] == NONE]
    kept = sum(bool(summarizer.summarize_sync([Turn(role="player", text=t)])) for t in facts)
    stored_chat = sum(bool(summarizer.summarize_sync([Turn(role="player", text=t)])) for t in chat)
    assert kept >= 0.95 * len(facts) and stored_chat <= 0.1 * len(chat), (kept, stored_chat)


def test_chit_chat_gives_no_events(minilm):
    summarizer = FastSummarizer(minilm)
    for text in (
        "Hello!",
        "Thanks a lot, see you tomorrow.",
        "What's on the menu tonight?",
        "Haha, good one.",
    ):
        assert predict(summarizer, text) == NONE, text


def test_npc_lines_are_not_facts_about_the_player(minilm):
    turns = [Turn(role="npc", text="I have a terrible back, love."), Turn(role="player", text="Oh no!")]
    assert asyncio.run(FastSummarizer(minilm).summarize(turns)) == []


def test_one_message_with_two_facts_gives_two_events(minilm):
    drafts = asyncio.run(
        FastSummarizer(minilm).summarize(
            [Turn(role="player", text="I'm allergic to peanuts. My sister Anna is getting married.")]
        )
    )
    assert [(str(d.type), d.content) for d in drafts] == [
        ("health", "The player is allergic to peanuts."),
        ("relationship", "The player's sister Anna is getting married."),
    ]
    assert drafts[0].importance >= 8


@pytest.mark.parametrize(
    ("sentence", "fact"),
    [
        ("I love spicy food.", "The player loves spicy food."),
        ("Honestly, I hate cilantro.", "The player hates cilantro."),
        (
            "I've been feeling lonely since I moved.",
            "The player has been feeling lonely since the player moved.",
        ),
        ("I gave you a silver ring.", "The player gave Mira a silver ring."),
        ("Remember when we fought off the wolves?", "The player and Mira fought off the wolves."),
        ("I worry about my brother.", "The player worries about their brother."),
        ("I'm a nurse.", "The player is a nurse."),
        ("I don't eat meat.", "The player doesn't eat meat."),
        # a name that starts with "I" is a name, not the pronoun (the soak found "the playersabel")
        ("My sister Isabel is getting married.", "The player's sister Isabel is getting married."),
        ("I have a dog named Iggy.", "The player has a dog named Iggy."),
        ("Ivan and I went fishing.", "Ivan and the player went fishing."),
        # an adverb is not the verb ("the player totallies agree" before)
        ("I totally agree with you.", "The player totally agrees with Mira."),
        ("I wanna open a bakery.", "The player wants to open a bakery."),
        ("I really rely on my brother.", "The player really relies on their brother."),
        # words that only address the character are not part of the fact
        ("Thanks, Mira! I finally passed my exam.", "The player finally passed their exam."),
        ("I get it, Mira.", "The player gets it."),
        ("Hey Mira, I was born in Lyon, France.", "The player was born in Lyon, France."),
        # "mine" the pit is not "mine" the pronoun ("the player's life in the theirs" before)
        ("You saved my life in the mine.", "Mira saved the player's life in the mine."),
        ("I work in a gold mine.", "The player works in a gold mine."),
        ("That horse is mine.", "That horse is theirs."),
    ],
)
def test_third_person_rewrite(sentence, fact):
    assert to_third_person(sentence, "Mira") == fact


def test_slots_mark_facts_that_change():
    assert detect_slot("personal_info", "I just moved to Berlin.") == "home"
    assert detect_slot("personal_info", "I work as a nurse.") == "job"
    assert detect_slot("preference", "I'm vegan now.") == "diet"
    assert detect_slot("preference", "I love jazz.") is None


def test_sentence_splitting_keeps_thoughts_whole():
    assert split_sentences("I love spicy food, and I have a dog.") == ["I love spicy food.", "I have a dog."]
    assert split_sentences("I think my knee hurts") == ["I think my knee hurts"]


def test_missing_or_mismatched_weights_say_how_to_fix(minilm, tmp_path):
    with pytest.raises(SummarizerWeightsError, match="training.classifiers.fast_summarizer"):
        FastSummarizer(minilm, weights_path=tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, weight=np.zeros((9, 10)), bias=np.zeros(9), labels=np.array(LABELS))
    with pytest.raises(SummarizerWeightsError, match="retrain"):
        FastSummarizer(minilm, weights_path=bad)


@pytest.mark.parametrize(
    "raw",
    [
        '[{"type": "health", "content": "The player has asthma.", "importance": 8}]',
        '```json\n[{"type": "health", "content": "The player has asthma.", "importance": 8},]\n```',
        "Sure! [{'type': 'health', 'content': 'The player has asthma.', 'importance': '8'}]",
        '[{"type": "Health", "content": "The player has asthma.", "importance": 8}',
        'Here: {"type": "health", "content": "The player has asthma.", "importance": 8} and more text',
    ],
)
def test_broken_model_json_is_repaired_and_validated(raw):
    drafts = drafts_from_json(repair_json(raw))
    assert [(str(d.type), d.content, d.importance) for d in drafts] == [
        ("health", "The player has asthma.", 8)
    ]


def test_items_that_do_not_validate_are_dropped():
    raw = '[{"type": "food", "importance": 2}, {"type": "plan", "content": ""}, {"type": "plan", "content": "The player has an exam.", "importance": 99}]'
    assert [(str(d.type), d.importance) for d in drafts_from_json(repair_json(raw))] == [("plan", 10)]
    assert repair_json("no json at all") is None


class FakeScriptedGenerator:
    """A TextGenerator that replies from a script and records what it was asked."""

    def __init__(self, reply: str):
        self.reply, self.calls = reply, []

    async def complete(self, messages, *, adapter=None, max_new_tokens=256):
        self.calls.append({"messages": list(messages), "adapter": adapter})
        return self.reply


def test_generative_summarizer_prompts_with_the_turns_and_uses_the_adapter():
    fake = FakeScriptedGenerator(
        '[{"type": "plan", "content": "The player has a driving test on Friday.", "importance": 7}]'
    )
    summarizer = GenerativeSummarizer(fake, adapter="summarizer-lora")
    turns = [
        Turn(role="npc", text="Busy week?"),
        Turn(role="player", text="I have a driving test on Friday."),
    ]
    drafts = asyncio.run(summarizer.summarize(turns, npc_name="Mira"))
    assert [str(d.type) for d in drafts] == ["plan"]
    prompt = fake.calls[0]["messages"]
    assert prompt[0]["role"] == "system" and all(t in prompt[0]["content"] for t in EVENT_TYPES)
    assert prompt[-1]["content"] == "Mira: Busy week?\nPlayer: I have a driving test on Friday."
    assert fake.calls[0]["adapter"] == "summarizer-lora"
    assert asyncio.run(summarizer.summarize([Turn(role="npc", text="Hello")])) == []


@pytest.mark.slow
def test_generative_summarizer_on_the_default_backbone_returns_only_valid_events():
    from companion.backbone import HFBackbone
    from companion.text_generator import BackboneTextGenerator

    backbone = HFBackbone.from_config()
    summarizer = GenerativeSummarizer(BackboneTextGenerator(backbone), max_new_tokens=48)
    drafts = asyncio.run(summarizer.summarize([Turn(role="player", text="I'm allergic to peanuts.")]))
    backbone.close()
    assert all(str(d.type) in EVENT_TYPES and 1 <= d.importance <= 10 for d in drafts)


@pytest.mark.parametrize(
    ("said", "statements"),
    [
        ("My wife and I are renovating a farmhouse.", ["My wife and I are renovating a farmhouse."]),
        (
            "I bought a tent and I'm taking it to the festival.",
            ["I bought a tent.", "I'm taking the tent to the festival."],
        ),
        (
            "I found a guitar in the attic and I play it daily.",
            ["I found a guitar in the attic.", "I play the guitar daily."],
        ),
        (
            "My mother lives in Oslo, and I visit her every summer.",
            ["My mother lives in Oslo.", "I visit my mother every summer."],
        ),
        (
            "My aunt is a painter and I sit for her portraits.",
            ["My aunt is a painter.", "I sit for my aunt's portraits."],
        ),
        ("I love spicy food, and I have a dog.", ["I love spicy food.", "I have a dog."]),
    ],
)
def test_clauses_keep_a_shared_subject_and_say_what_it_means(said, statements):
    assert split_sentences(said) == statements


@pytest.mark.parametrize(
    ("sentence", "fact"),
    [
        (
            "My wife and I are renovating a farmhouse.",
            "The player's wife and the player are renovating a farmhouse.",
        ),
        ("We adopted a greyhound last spring.", "The player and others adopted a greyhound last spring."),
        ("Last night I couldn't sleep.", "Last night the player couldn't sleep."),
    ],
)
def test_we_is_not_a_history_shared_with_the_character_unless_said_to_it(sentence, fact):
    assert to_third_person(sentence, "Mira") == fact


def test_a_statement_about_something_else_is_kept_as_what_the_player_said(minilm):
    summarizer = FastSummarizer(minilm)
    [told] = summarizer.summarize_sync([Turn(role="player", text="The stew here is always too salty.")])
    assert told.content == "The player said the stew here is always too salty."
    for chit_chat in (
        "That sounds great!",
        "Good evening! Lovely weather tonight.",
        "You look tired today, Mira.",
    ):
        assert summarizer.summarize_sync([Turn(role="player", text=chit_chat)], npc_name="Mira") == []


@pytest.mark.parametrize(
    ("sentence", "restored"),
    [
        ("Just started doing aerial yoga, it's great.", "I just started doing aerial yoga, it's great."),
        ("Been busy at the shelter.", "I've been busy at the shelter."),
        ("Still working on opening a dance studio.", "I'm still working on opening a dance studio."),
        ("Yeah, went home early after the storm.", "Yeah, I went home early after the storm."),
        ("Stoked about the trip next week!", "I'm stoked about the trip next week!"),
        ("Adopted a rescue greyhound last spring.", "I adopted a rescue greyhound last spring."),
        # left alone: an imperative, another subject, a question, an -ing subject, not a verb
        ("Take a look at this.", "Take a look at this."),
        ("Put it down.", "Put it down."),
        ("Sounds great!", "Sounds great!"),
        ("Went to the market, did you?", "Went to the market, did you?"),
        ("Painting is my escape.", "Painting is my escape."),
        ("Painting's a fun way to relax.", "Painting's a fun way to relax."),
        ("Morning, Jon!", "Morning, Jon!"),
        ("Hundred people came.", "Hundred people came."),
        ("I went home.", "I went home."),
        ("Loving it!", "Loving it!"),  # a reaction
        ("Been thinking about what you said.", "Been thinking about what you said."),  # to the NPC
        ("Got to go, talk later!", "Got to go, talk later!"),
    ],
)
def test_a_dropped_i_is_put_back(sentence, restored):
    assert restore_dropped_subject(sentence) == restored


def test_a_chat_style_line_without_i_is_still_the_players_fact(minilm):
    summarizer = FastSummarizer(minilm)
    drafts = summarizer.summarize_sync(
        [Turn(role="player", text="Thanks, Gina. Still working on opening a dance studio.")], npc_name="Gina"
    )
    assert [d.content for d in drafts] == ["The player is still working on opening a dance studio."]
