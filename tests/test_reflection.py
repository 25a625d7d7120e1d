"""The reflection module: the decision layer on scripted scenarios, each gate, and the post-check."""

import pytest

from companion.reflection import Decision, RecallChoice, Reflector, correction, guidance
from memory.events import MemoryEvent
from memory.fast_summarizer import FastSummarizer
from memory.store import ChromaMemoryStore
from persona_adapters import get_persona
from training.evaluation.scenarios import load_scenarios, run_scenarios

MIRA = get_persona("mira")


@pytest.fixture(scope="module")
def reflector(minilm):
    return Reflector(minilm)


def test_scenarios_cover_what_the_issue_asks():
    scenarios = load_scenarios()
    triggers = [t for s in scenarios for t in s["triggers"]]
    assert len(scenarios) >= 30
    recall_types = set()
    for t in triggers:
        kind = t.get("recall_type")
        recall_types |= set(kind) if isinstance(kind, list) else {kind} if kind else set()
    assert recall_types >= {
        "personal_info",
        "preference",
        "health",
        "relationship",
        "plan",
        "life_event",
        "emotion",
        "shared_history",
    }
    assert {t["strategy"] for t in triggers} == {"answer", "support", "recall", "refuse"}
    assert any(len(s["triggers"]) > 1 for s in scenarios)  # repeated triggers
    assert any(len(s.get("sessions") or []) > 1 for s in scenarios)  # several sessions


def test_decision_layer_gets_at_least_90_percent_of_scenarios_right(reflector, minilm, tmp_path):
    store = ChromaMemoryStore.embedded(tmp_path, minilm)
    results = run_scenarios(load_scenarios(), store, FastSummarizer(minilm), reflector)
    wrong = [f"{r.scenario}: {r.text!r}: {'; '.join(r.problems)}" for r in results if not r.ok]
    accuracy = 1 - len(wrong) / len(results)
    assert accuracy >= 0.9, "\n".join(wrong)
    again = run_scenarios(load_scenarios(), store, FastSummarizer(minilm), reflector)
    assert [r.decision.strategy for r in again] == [r.decision.strategy for r in results]  # deterministic


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("What's the best smartphone to buy?", "smartphones"),
        ("Can you look it up on the internet?", "the internet"),
        ("Which car should I drive?", "cars"),
        ("What's on the menu tonight?", None),
        ("I saw a train of wagons on the road.", None),  # not a question
    ],
)
def test_the_cards_own_list_is_always_honoured(reflector, text, named):
    assert reflector.boundary.named(text, MIRA) == named


def test_emotion_is_a_trained_reading_not_keywords(reflector):
    # none of these lines contains an emotion word
    assert (
        reflector.emotion.read("Nobody ever calls me anymore and the evenings are so long.").label
        == "sadness"
    )
    assert reflector.emotion.read("Tomorrow decides everything and I can't sleep.").label == "distress"
    assert reflector.emotion.read("Could I get a bowl of stew?").label == "neutral"


def _decision(**kwargs):
    base = dict(strategy="answer", emotion="neutral", emotion_confidence=0.9, tone="warm")
    return Decision(**(base | kwargs))


def _event(content, **kwargs):
    return MemoryEvent(
        **(
            {"type": "health", "content": content, "importance": 8, "player_id": "p", "npc_id": "mira"}
            | kwargs
        )
    )


STOMACH = _event("The player has a really sensitive stomach.")
RECALL = _decision(
    strategy="recall",
    recall=[
        RecallChoice(event_id=STOMACH.id, type="health", content=STOMACH.content, value=0.4, reason="test")
    ],
)


@pytest.mark.parametrize(
    ("draft", "kinds"),
    [
        ("As an AI language model, I cannot eat hotpot.", {"breaks_character", "ignored_recall"}),
        ("Hotpot? Love, didn't you tell me your stomach is sensitive? Maybe something gentler.", set()),
        (
            "Hotpot sounds lovely! You told me you used to be a famous pirate captain.",
            {"invented_memory", "ignored_recall"},
        ),
        ("Hotpot it is, I'll make it extra spicy for you!", {"ignored_recall"}),
        ("Your stomach! " + "Mind it, love. " * 40, {"too_long"}),
    ],
)
def test_post_check_flags(reflector, draft, kinds):
    check = reflector.after(draft, decision=RECALL, known=[STOMACH])
    assert {f.kind for f in check.flags} == kinds


@pytest.mark.parametrize(
    ("draft", "breaks"),
    [
        ("Artificial intelligence? Never heard of it, love. Ask me about the roads instead.", False),
        ("As an artificial intelligence, I have no inn, but I can describe one.", True),
        ("I'm an artificial intelligence, so I cannot taste the stew.", True),
    ],
)
def test_refusing_a_topic_by_its_name_is_not_breaking_character(reflector, draft, breaks):
    refuse = _decision(strategy="refuse", refuse_topic="artificial intelligence")
    check = reflector.after(draft, decision=refuse, known=[])
    assert ("breaks_character" in {f.kind for f in check.flags}) is breaks


@pytest.mark.parametrize(
    ("draft", "refused"),
    [
        ("I don\u2019t know what smartphones are, love. Travellers bring all sorts of strange words.", True),
        ("Smartphones? Never heard of such a thing. But there's stew on the fire if you're hungry.", True),
        (
            "I have no idea what those are. They're tiny devices, around since the early days of computing.",
            False,
        ),
        ("I don't know, love. I can only provide information based upon my knowledge base.", False),
        ("Smartphones are small computers you carry in your pocket.", False),
        ("I don\u2019t know what smartphones are, but they can be found everywhere!", False),
        ("Never heard of them, but I can tell you they have been around since the 1970s.", False),
        ("Never heard of them, love. But if a traveller sells one, I'll ask what it does.", True),
        ("I don't know what that is, but it isn't sold in this village.", True),
    ],
)
def test_a_refusal_that_goes_on_to_explain_the_thing_has_not_refused(reflector, draft, refused):
    """Typographic apostrophes count ("don\u2019t"), and with the persona each further sentence
    is read: an explanation of the thing, or assistant talk, undoes the refusal."""
    refuse = _decision(strategy="refuse", refuse_topic="smartphones")
    check = reflector.after(draft, decision=refuse, known=[], persona=MIRA)
    assert ("answered_out_of_domain" not in {f.kind for f in check.flags}) is refused, check.flags


def test_post_check_catches_a_superseded_fact():
    old = _event("The player lives in Paris.", type="personal_info", importance=6)
    new = _event("The player moved to Berlin.", type="personal_info", importance=6, supersedes=old.id)
    old = old.model_copy(update={"superseded_by": new.id})
    from fakes import FakeHashEmbedder

    from companion.reflection.postcheck import PostChecker

    checker = PostChecker(FakeHashEmbedder())
    flags = checker.check("How is life in Paris these days?", decision=_decision(), known=[old, new]).flags
    assert [f.kind for f in flags] == ["contradicts_memory"]
    assert checker.check("How is Berlin treating you?", decision=_decision(), known=[old, new]).ok


def test_guidance_speaks_to_the_player_and_correction_names_the_fix(reflector):
    text = guidance(RECALL, MIRA)
    assert "you have a really sensitive stomach" in text
    refuse = guidance(_decision(strategy="refuse", refuse_topic="smartphones"), MIRA)
    assert "smartphones" in refuse and "Mira" in refuse
    fix = correction(reflector.after("As an AI, I can't.", decision=_decision(), known=[]), MIRA)
    assert "not an AI" in fix


@pytest.mark.parametrize(
    ("fact", "said"),
    [
        ("The player works night shifts at the hospital.", "you work night shifts at the hospital"),
        ("The player always carries a sword.", "you always carry a sword"),
        ("The player watches birds.", "you watch birds"),
        ("The player has a really sensitive stomach.", "you have a really sensitive stomach"),
        ("The player's sister Anna lives by the sea.", "your sister Anna lives by the sea"),
    ],
)
def test_a_fact_is_said_back_to_the_player_in_the_second_person(fact, said):
    from companion.reflection.guidance import second_person

    assert second_person(fact) == said


@pytest.mark.parametrize(
    ("fact", "said"),
    [
        # the character speaks of itself in the first person ("you gave Mira a silver ring" before)
        ("The player gave Mira a silver ring last winter.", "you gave me a silver ring last winter"),
        ("The player and Mira fought off the wolves.", "we fought off the wolves"),
        ("Mira and the player built that boat together.", "we built that boat together"),
        ("Mira saved the player's life in the mine.", "I saved your life in the mine"),
        ("The player borrowed Mira's lantern.", "you borrowed my lantern"),
        ("The player and the NPC sang an old ballad together.", "we sang an old ballad together"),
        ("The player's friend Miranda sings.", "your friend Miranda sings"),
    ],
)
def test_the_character_is_said_in_the_first_person(fact, said):
    from companion.reflection.guidance import memory_line, recall_line, second_person

    assert second_person(fact, "Mira") == said
    assert recall_line(fact, "Mira") == f"Didn't you tell me {said}?"
    assert memory_line(fact, "Mira") == f"I remember that {said}."


def test_loose_relevance_brings_a_memory_up_only_when_the_scorer_does_not_rule_it_out():
    """Search relevance x type weight counts at the bar from 0.3 on its own, and from 0.15 when the
    recall scorer gives the pair at least its floor (recall.combined_scores)."""
    from companion.reflection.recall import combined_scores
    from companion.reflection.reflector import ReflectionConfig
    from memory.events import ScoredEvent, ScoreParts

    config = ReflectionConfig()
    bars = dict(
        relevance_bar=config.relevance_bar,
        scorer_backed_bar=config.scorer_backed_bar,
        scorer_floor=config.scorer_floor,
    )

    def hit(relevance):
        return ScoredEvent(
            event=_event("The player is allergic to peanuts."),
            score=relevance,
            parts=ScoreParts(relevance=relevance, recency=1.0, importance=0.8),
        )

    loose, close = hit(0.2), hit(0.35)  # health: type weight 1.0
    backed, ruled_out = combined_scores([loose, loose], [0.06, 0.01], 0.5, **bars)
    assert backed >= 0.5 > ruled_out  # the same loose match, brought up only with the scorer's backing
    assert ruled_out == pytest.approx(0.2 / 0.3 * 0.5)
    (alone,) = combined_scores([close], [0.0], 0.5, **bars)
    assert alone >= 0.5  # a close match needs no backing
    (scorer_only,) = combined_scores([hit(0.0)], [0.7], 0.5, **bars)
    assert scorer_only == pytest.approx(0.7)
