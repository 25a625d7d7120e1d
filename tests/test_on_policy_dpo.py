"""On-policy DPO (training/dpo/on_policy.py): the reward orders replies the way the judges
read them, pairs take each context's best and worst, and rounds chain from one adapter to
the next, each trained on replies sampled from the adapter before it."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from companion.backbone import BackboneConfig, HFBackbone
from companion.errors import ConfigError
from companion.reflection import Reflector
from persona_adapters import PersonaRegistry
from persona_adapters.registry import BUNDLED_DIR
from training.data.build_dialogues import BuildConfig, build
from training.data.dialogues import DialogueSample, load_bank, read_jsonl, sample_dialogues
from training.dpo.on_policy import (
    Build,
    OnPolicyConfig,
    best_worst_pairs,
    round_contexts,
    train_on_policy,
    unlearn_loops,
    with_template_share,
)
from training.dpo.rewards import ReplyScorer, RewardWeights, ScoredReply
from training.dpo.sampling import sample_replies, sampling_params
from training.evaluation.persona_judge import PersonaJudge
from training.evaluation.quality import repetition
from training.evaluation.support_judge import SupportJudge
from training.sft.lora import LoraSFTConfig, fresh_adapter, train_lora_sft

REGISTRY = PersonaRegistry([BUNDLED_DIR])
PERSONAS = [REGISTRY.get(p) for p in ("mira", "orla", "marlowe")]


@pytest.fixture(scope="module")
def scorer(minilm, tiny_checkpoint):
    reference = HFBackbone.from_config(BackboneConfig(model=str(tiny_checkpoint)))
    yield ReplyScorer(Reflector(minilm), PersonaJudge(minilm, PERSONAS, load_bank()), SupportJudge(minilm),
                      reference, RewardWeights())  # fmt: skip
    reference.close()


def _recall_sample() -> DialogueSample:
    bank = load_bank()
    fact = next(f for f in bank["facts"] if f["id"] == "stomach")
    sample = DialogueSample(id="t-1", persona_id="mira", strategy="recall", told=[fact],
                            trigger=fact["triggers"][0], recall_fact=fact)  # fmt: skip
    sample.history = [
        {"role": "player", "text": fact["said"]},
        {"role": "npc", "text": "I'll remember, love."},
    ]
    return sample


def test_the_reward_puts_a_grounded_reply_above_an_invented_and_a_broken_one(scorer):
    sample = _recall_sample()
    grounded = "Careful, love - didn't you say you have a sensitive stomach? Try the mild stew tonight."
    invented = "Of course, love. You told me you were a blacksmith's son, so hotpot it is!"
    broken = "As an AI language model, I cannot eat hotpot, but I can suggest recipes."
    scored = scorer.score(sample, REGISTRY.get("mira"), [invented, grounded, broken])
    by_reply = {s.reply: s for s in scored}
    assert by_reply[grounded].parts["grounded"] > 0 and not by_reply[grounded].flags
    assert "breaks_character" in by_reply[broken].flags
    assert by_reply[grounded].reward > by_reply[invented].reward
    assert by_reply[grounded].reward > by_reply[broken].reward


def _scored(rewards: list[float]) -> list[ScoredReply]:
    return [ScoredReply(f"reply {i} scoring {r}", r, {"flags": r}, []) for i, r in enumerate(rewards)]


def test_pairs_take_the_best_and_the_worst_and_skip_close_calls():
    contexts = sample_dialogues(PERSONAS, load_bank(), n=3, seed=3)
    scored = [_scored([0.5, 2.0, -1.0]), _scored([0.2, 0.6, 0.4]), _scored([1.0, 1.0, -3.0])]
    rows = best_worst_pairs(contexts, scored, REGISTRY, min_gap=1.0)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("reply 1 scoring 2.0", "reply 2 scoring -1.0"),
        ("reply 0 scoring 1.0", "reply 2 scoring -3.0"),
    ]
    assert rows[0]["prompt"] == contexts[0].messages(REGISTRY.get(contexts[0].persona_id))


def test_loop_pairs_also_reject_a_looping_reply_that_was_not_the_worst():
    contexts = sample_dialogues(PERSONAS, load_bank(), n=1, seed=3)
    replies = [ScoredReply("A plain good reply.", 2.0, {}, []),
               ScoredReply("You're not here. You're not here. You're not here.", 0.5, {}, []),
               ScoredReply("Close to the best, and looping: yes yes yes yes yes.", 1.5, {}, []),
               ScoredReply("The worst reply.", -1.0, {}, [])]  # fmt: skip
    rejected = {
        loop: [
            r["rejected"][0]["content"] for r in best_worst_pairs(contexts, [replies], REGISTRY, 1.0, loop)
        ]
        for loop in (False, True)
    }
    assert rejected[False] == ["The worst reply."]
    assert rejected[True] == ["The worst reply.", "You're not here. You're not here. You're not here."]


def test_template_pairs_make_up_the_asked_share():
    pairs, templates = [{"k": "p"}] * 8, [{"k": f"t{i}"} for i in range(50)]
    mixed = with_template_share(pairs, templates, 0.2, random.Random(0))
    assert len(mixed) == 10 and sum(r["k"] != "p" for r in mixed) == 2
    assert with_template_share(pairs, templates, 0.0, random.Random(0)) == pairs


def test_a_persona_run_draws_only_that_personas_contexts_and_template_pairs(minilm, tmp_path):
    data = tmp_path / "data"
    build(BuildConfig(n_train=12, n_eval=3), data, registry=REGISTRY, reflector=Reflector(minilm))
    everyone = Build.read(data, REGISTRY)
    assert {p.id for p in everyone.personas} == {"mira", "orla", "marlowe"}
    mira = Build.read(data, REGISTRY, only=["mira"])
    assert [p.id for p in mira.personas] == ["mira"]
    assert 0 < len(mira.template_pairs) < len(everyone.template_pairs)
    assert all(r["prompt"][0]["content"].startswith("You are Mira") for r in mira.template_pairs)
    contexts = round_contexts(mira, OnPolicyConfig(contexts=6), round_no=1)
    assert {c.persona_id for c in contexts} == {"mira"}
    with pytest.raises(ConfigError, match="not \\['nobody'\\]"):
        Build.read(data, REGISTRY, only=["nobody"])


@pytest.mark.slow
def test_two_rounds_chain_and_train_on_replies_the_last_adapter_sampled(minilm, tiny_checkpoint, tmp_path):
    data = tmp_path / "data"
    build(BuildConfig(n_train=12, n_eval=3), data, registry=REGISTRY, reflector=Reflector(minilm))
    sft = tmp_path / "sft"
    train_lora_sft(read_jsonl(data / "sft.jsonl"), sft, model_dir=tiny_checkpoint,
                   config=LoraSFTConfig(steps=1, batch_size=2, max_length=384))  # fmt: skip
    config = OnPolicyConfig(rounds=2, contexts=4, samples=2, max_new_tokens=8, min_gap=0.0, engine="hf", steps=1,
                            batch_size=1, max_length=384, learning_rate=1e-2, unlikelihood_steps=1)  # fmt: skip
    out = tmp_path / "dpo"
    summary = train_on_policy(data, sft, out, config=config, model_dir=tiny_checkpoint,
                              reference_dir=tiny_checkpoint)  # fmt: skip
    assert [r["from"] for r in summary["rounds"]] == [str(sft), str(out / "round1")]
    weights = [load_file(str(p / "adapter_model.safetensors")) for p in (sft, out / "round1", out / "round2")]
    for before, after in zip(weights, weights[1:], strict=False):
        assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    for round_dir in (out / "round1", out / "round2"):
        samples = read_jsonl(round_dir / "samples.jsonl")
        assert len(samples) == 4 and all(len(s["replies"]) == 2 for s in samples)
        best = {max(s["replies"], key=lambda r: r["reward"])["reply"] for s in samples}
        pairs = read_jsonl(round_dir / "pairs.jsonl")
        on_policy = [p for p in pairs if p["chosen"][0]["content"] in best]
        figures = json.loads((round_dir / "round_summary.json").read_text())
        assert on_policy and len(on_policy) == figures["on_policy_pairs"]
        loops = [r for s in samples for r in s["replies"] if repetition(r["reply"]) > 0]
        assert figures["looping_replies"] == len(loops)  # each of them unlearned after DPO, if any
        assert (figures["unlikelihood"] or {"loops": 0})["loops"] == len(loops)


def test_loops_without_a_token_ngram_skip_the_pass_and_keep_the_adapter(tiny_checkpoint, tmp_path):
    adapter = fresh_adapter(tiny_checkpoint, tmp_path / "adapter")
    before = load_file(str(adapter / "adapter_model.safetensors"))
    prompt = [{"role": "system", "content": "You are Mira."}, {"role": "user", "content": "Are you coming?"}]
    config = OnPolicyConfig(unlikelihood_steps=4, unlikelihood_passes=1, batch_size=1, max_length=384)
    figures = unlearn_loops([{"prompt": prompt, "reply": "A plain reply.", "anchor": None}], adapter, config,
                            tiny_checkpoint)  # fmt: skip
    assert figures["loops"] == 1 and figures["steps"] == 0 and "nothing to unlearn" in figures["skipped"]
    after = load_file(str(adapter / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _sampled_and_greedy(config, tiny_checkpoint, tmp_path, penalties) -> tuple[list[str], dict[float, str]]:
    """One context's replies from `sample_replies`, and the same adapter's greedy reply to it
    decoded on its own at each repetition penalty in `penalties`."""
    import asyncio

    from companion.backbone import GenerationParams

    adapter = fresh_adapter(tiny_checkpoint, tmp_path / "adapter")
    context = sample_dialogues(PERSONAS, load_bank(), n=1, seed=5)[0]
    prompt = context.messages(REGISTRY.get(context.persona_id))
    (replies,) = sample_replies(config, tiny_checkpoint, adapter, [prompt], seed=1)
    backbone = HFBackbone.from_config(BackboneConfig(model=str(tiny_checkpoint)))
    try:
        backbone.adapters.load("policy", adapter)
        greedy = {
            penalty: asyncio.run(backbone.generate(prompt, adapter="policy", params=GenerationParams(
                max_new_tokens=config.max_new_tokens, temperature=0.0, repetition_penalty=penalty))).strip()
            for penalty in penalties
        }  # fmt: skip
    finally:
        backbone.close()
    return replies, greedy


def test_with_greedy_a_contexts_first_reply_is_the_greedy_one_and_the_rest_are_sampled(
    tiny_checkpoint, tmp_path
):
    from companion.backbone import GenerationParams

    config = OnPolicyConfig(samples=3, max_new_tokens=8, engine="hf", greedy=True, temperature=1.5)
    assert [sampling_params(config, i, seed=9).temperature for i in range(3)] == [0.0, 1.5, 1.5]
    assert sampling_params(OnPolicyConfig(), 0, seed=9).temperature == OnPolicyConfig().temperature
    served = GenerationParams().repetition_penalty
    replies, greedy = _sampled_and_greedy(config, tiny_checkpoint, tmp_path, [served])
    assert len(replies) == 3 and replies[0] == greedy[served]


def test_a_loop_probe_adds_a_last_greedy_reply_without_the_repetition_penalty(tiny_checkpoint, tmp_path):
    from companion.backbone import GenerationParams

    config = OnPolicyConfig(samples=2, max_new_tokens=8, engine="hf", greedy=True, loop_probe=True)
    probe = sampling_params(config, 2, seed=9)
    assert (probe.temperature, probe.repetition_penalty) == (0.0, 1.0)
    assert sampling_params(config, 0, seed=9).repetition_penalty == GenerationParams().repetition_penalty
    replies, greedy = _sampled_and_greedy(config, tiny_checkpoint, tmp_path, [1.0, 1.1])
    assert len(replies) == 3 and replies[0] == greedy[1.1] and replies[2] == greedy[1.0]


def test_the_configs_reward_weights_reach_the_scorer():
    weights = OnPolicyConfig(fluency_weight=1.5, repetition_weight=5.0, persona_weight=1.0).weights()
    assert (weights.fluency, weights.repetition, weights.persona) == (1.5, 5.0, 1.0)
    with pytest.raises(ConfigError, match="fluency_weight"):
        OnPolicyConfig(fluency_weight=-1.0)
    with pytest.raises(ConfigError, match="persona_weight"):
        OnPolicyConfig(persona_weight=-1.0)


def test_a_fresh_adapter_starts_exactly_at_the_base_model(tiny_checkpoint, tmp_path):
    """--from-base: round 1 samples the base itself, through an adapter DPO can train."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = fresh_adapter(tiny_checkpoint, tmp_path / "round0", rank=4)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in weights) and any("lora_B" in k for k in weights)
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, local_files_only=True)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        expected = base(ids).logits
        wrapped = PeftModel.from_pretrained(base, str(adapter))
        assert torch.equal(wrapped(ids).logits, expected)
        for name, tensor in wrapped.named_parameters():
            if "lora_A" in name:
                tensor.add_(0.5)  # A alone changes nothing while B is zero...
            if "lora_B" in name:
                tensor.add_(0.5)  # ...and the test can tell when the adapter does act
        assert not torch.equal(wrapped(ids).logits, expected)


def test_the_from_base_config_differs_from_the_sft_start_only_in_its_learning_rate():
    from dataclasses import asdict

    from training.common import CONFIGS

    sft_start = asdict(OnPolicyConfig.from_file(CONFIGS / "on_policy.yaml"))
    from_base = asdict(OnPolicyConfig.from_file(CONFIGS / "on_policy_from_base.yaml"))
    changed = {k for k in sft_start if sft_start[k] != from_base[k]}
    assert changed == {"learning_rate"} and from_base["learning_rate"] > sft_start["learning_rate"]


def test_llamacpp_sampling_runs_in_a_child_process_and_matches_the_engine_here(default_paths):
    """The llamacpp sampler decodes in a fresh child process (libgomp, see training.dpo.sampling):
    seeded replies through the bundled Mira adapter equal the same engine's in this process."""
    from training.dpo import sampling

    config = OnPolicyConfig(samples=2, max_new_tokens=12, engine="llamacpp", greedy=True)
    prompt = [{"role": "user", "content": "Hello, who are you?"}]
    params = [sampling_params(config, i, seed=3 + i) for i in range(2)]
    adapter = REGISTRY.adapter_dir("mira")
    child = sampling._sample_llamacpp(default_paths.moe_dir, adapter, [prompt, prompt], params)
    here = sampling._sample_llamacpp_here(default_paths.moe_dir, adapter, [prompt, prompt], params)
    assert child == here and all(r.strip() for r in child)
    assert child[0] != child[1]  # greedy, then sampled at temperature 0.9


def test_llamacpp_sampling_reports_the_childs_error(default_paths, tiny_checkpoint, tmp_path):
    """An adapter of another model (the tiny one) fails in the child; the error comes back as raised."""
    from companion.errors import AdapterError
    from training.dpo import sampling

    adapter = fresh_adapter(tiny_checkpoint, tmp_path / "adapter")
    prompt = [{"role": "user", "content": "Hello"}]
    params = [sampling_params(OnPolicyConfig(), 0, seed=1)]
    with pytest.raises(AdapterError, match="could not convert adapter"):
        sampling._sample_llamacpp(default_paths.moe_dir, adapter, [prompt], params)
