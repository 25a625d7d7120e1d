"""The evaluation's quality measures (issue 14): fluency, variety, grounding, intervals."""

import pytest

from training.evaluation.quality import distinct_n, grounded, mean_interval, repetition, wilson


def test_repetition_and_distinct_2_see_a_stuck_reply():
    stuck = "Love, love love - love love love love love."
    fine = "Stew's on the fire, and there's fresh bread by the hearth."
    assert repetition(stuck) > 0.5 and repetition(fine) == 0.0
    assert distinct_n([stuck, stuck]) < 0.3 < distinct_n([fine, "Mind the step, the cellar floods."])
    assert distinct_n(["Hi."]) is None


def test_grounding_wants_the_fact_not_the_template_phrase():
    fact = "The player has a really sensitive stomach."
    assert grounded("Didn't you say your stomach is sensitive? Something gentler, then.", fact)
    assert not grounded("Didn't you tell me something once? Hotpot it is!", fact)


def test_wilson_intervals_and_mean_intervals():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(27.75, abs=0.05)
    low, high = wilson(5, 10)
    assert low == pytest.approx(23.66, abs=0.05) and high == pytest.approx(76.34, abs=0.05)
    assert wilson(0, 0) == (0.0, 100.0)
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert (
        mean == 2.0 and low == pytest.approx(2 - 1.96 / 3**0.5) and high == pytest.approx(2 + 1.96 / 3**0.5)
    )


def test_the_persona_judge_tells_the_bundled_voices_apart_on_lines_it_never_saw(minilm):
    from persona_adapters import PersonaRegistry
    from training.data.dialogues import load_bank
    from training.evaluation.persona_judge import PersonaJudge

    registry = PersonaRegistry.default()
    judge = PersonaJudge(minilm, [registry.get(p) for p in ("marlowe", "mira", "orla")], load_bank())
    assert judge.attribute(["The reactor's stable, kid. Strap in for the jump."]) == ["orla"]
    assert judge.attribute(["Sit by the hearth, love, the stew's still warm."]) == ["mira"]
    held = judge.heldout_accuracy()
    assert held["n"] >= 12 and held["pct"] > 100 / 3  # better than chance among three, on unseen lines


def test_the_persona_judge_reads_a_refusal_template_with_its_verb_and_pronoun():
    """The agreement slots ({is}, {it}) read as before they existed, so the judge, and every
    persona column measured with it, stays the same."""
    from persona_adapters import PersonaRegistry
    from training.data.dialogues import load_bank
    from training.evaluation.persona_judge import persona_lines

    lines = persona_lines(PersonaRegistry.default().get("marlowe"), load_bank()["voices"]["marlowe"])
    assert "I don't know what  is, pal. Try me on something in this town" in lines
    assert "Never heard of it, pal. Sounds like something a con man would sell" in lines
    assert not any("{" in line for line in lines)


def test_the_support_judge_reads_comfort_on_replies_it_never_saw(minilm):
    from training.evaluation.support_judge import SupportJudge

    judge = SupportJudge(minilm)
    assert judge.supportive(
        ["I'm so sorry about your father. Stay as long as you need, love.", "Rooms are three silver a night."]
    ) == [True, False]
    held = judge.heldout_accuracy()
    assert held["n"] >= 40 and held["pct"] >= 75  # 85% [71-93] when written; chance is 50%


def test_replies_scored_together_on_a_shared_prompt_cache_get_each_ones_own_nll(tiny_checkpoint):
    from companion.backbone import BackboneConfig, HFBackbone
    from training.evaluation.quality import completion_nll, completion_nlls

    backbone = HFBackbone.from_config(BackboneConfig(model=str(tiny_checkpoint)))
    messages = [
        {"role": "system", "content": "You are Mira."},
        {"role": "user", "content": "Any stew tonight?"},
    ]
    replies = [
        "Aye, love, a big pot of it.",
        "No.",
        "The road north is muddy, traveller, so mind your boots.",
    ]
    together = completion_nlls(backbone, messages, replies)
    alone = [completion_nll(backbone, messages, r) for r in replies]
    assert [n for _, n in together] == [n for _, n in alone]
    assert [t for t, _ in together] == pytest.approx([t for t, _ in alone], rel=1e-4)
    assert len({round(t, 3) for t, _ in together}) == 3
    backbone.close()


class FakeAdapterSet:
    def __init__(self):
        self.loaded = {}

    def load(self, name, path):
        self.loaded[name] = path


class FakeBackbone:
    def __init__(self):
        self.adapters = FakeAdapterSet()


def test_the_persona_stage_gives_each_reply_its_own_personas_adapter(tmp_path):
    from types import SimpleNamespace

    from companion.errors import ConfigError
    from persona_adapters import PersonaRegistry
    from training.evaluation.evaluate import load_stages

    registry, backbone = PersonaRegistry.default(), FakeBackbone()
    items = [SimpleNamespace(persona_id=p) for p in ("mira", "orla", "mira")]
    for pid in ("mira", "orla"):
        (tmp_path / "tuned" / pid).mkdir(parents=True)
    stages = load_stages(
        backbone, registry, items, [f"dpo={tmp_path}"], ["bundled", f"tuned={tmp_path / 'tuned'}"]
    )
    assert [stages["base"](i) for i in items] == [None] * 3
    assert [stages["dpo"](i) for i in items] == ["dpo"] * 3
    assert [stages["bundled"](i) for i in items] == ["bundled-mira", "bundled-orla", "bundled-mira"]
    assert backbone.adapters.loaded["bundled-orla"] == registry.adapter_dir("orla")
    assert [stages["tuned"](i) for i in items] == ["tuned-mira", "tuned-orla", "tuned-mira"]
    assert backbone.adapters.loaded["tuned-orla"] == tmp_path / "tuned" / "orla"
    (tmp_path / "partial" / "mira").mkdir(parents=True)
    with pytest.raises(ConfigError, match="persona 'orla' has no adapter to evaluate at"):
        load_stages(FakeBackbone(), registry, items, [], [f"partial={tmp_path / 'partial'}"])

    class NoAdapters:
        def adapter_dir(self, persona_id):
            return None

    with pytest.raises(ConfigError, match="companion persona train mira"):
        load_stages(FakeBackbone(), NoAdapters(), items, [], ["bundled"])
