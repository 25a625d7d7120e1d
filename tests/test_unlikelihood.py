"""The unlikelihood pass on the policy's own loops (training/dpo/unlikelihood.py): it marks
the tokens of repeated n-grams, lowers their probability where they repeat, and takes its
rows from the round's replies that loop, each beside its context's best reply."""

import pytest
import torch
from safetensors.torch import load_file

from companion.errors import ConfigError
from persona_adapters import PersonaRegistry
from persona_adapters.registry import BUNDLED_DIR
from tiny_models import VOCAB
from training.data.dialogues import load_bank, sample_dialogues
from training.dpo.on_policy import OnPolicyConfig, loop_rows
from training.dpo.rewards import ScoredReply
from training.dpo.unlikelihood import UnlikelihoodConfig, repeated_positions, train_unlikelihood
from training.sft.lora import LoraSFTConfig, train_lora_sft

REGISTRY = PersonaRegistry([BUNDLED_DIR])
PERSONAS = [REGISTRY.get(p) for p in ("mira", "orla", "marlowe")]
LOOP = "No, no, no! You're not here. You're not here. You're not here. You're not here."


def test_every_token_of_a_repeated_ngram_is_marked_and_nothing_else():
    assert repeated_positions([1, 2, 3, 4, 1, 2, 3, 4, 5], n=3) == [4, 5, 6, 7]
    assert repeated_positions([1, 2, 3, 4, 5, 6], n=3) == []
    assert repeated_positions([7, 7, 7, 7], n=2) == [1, 2, 3]
    assert repeated_positions([1, 2], n=3) == []


def test_max_passes_caps_the_steps_at_that_many_passes_over_the_loops():
    assert UnlikelihoodConfig(steps=24, batch_size=2).steps_for(4) == 24  # no cap
    capped = UnlikelihoodConfig(steps=24, batch_size=2, max_passes=1)
    assert [capped.steps_for(n) for n in (1, 4, 5, 38, 60)] == [1, 2, 3, 19, 24]
    assert UnlikelihoodConfig(steps=24, batch_size=2, max_passes=2).steps_for(5) == 6
    with pytest.raises(ConfigError, match="max_passes"):
        UnlikelihoodConfig(max_passes=-1)


def test_loop_rows_take_each_looping_reply_with_the_best_reply_as_its_anchor():
    contexts = sample_dialogues(PERSONAS, load_bank(), n=2, seed=3)
    plain = ScoredReply("I'll meet you by the well at dawn.", 2.0, {}, [])
    looping = ScoredReply(LOOP, -1.0, {}, [])
    best_loops = ScoredReply("Yes yes yes, the well, the well, the well, the well.", 3.0, {}, [])
    rows = loop_rows(contexts, [[plain, looping], [best_loops, plain]], REGISTRY)
    assert [(r["reply"], r["anchor"]) for r in rows] == [(LOOP, plain.reply), (best_loops.reply, None)]
    assert rows[0]["prompt"] == contexts[0].messages(REGISTRY.get(contexts[0].persona_id))
    with pytest.raises(ConfigError, match="unlikelihood_steps"):
        OnPolicyConfig(unlikelihood_steps=-1)


@pytest.fixture(scope="module")
def peaked_checkpoint(tmp_path_factory, tokenizer):
    """The tiny Mixtral with its output layer scaled up: a random tiny model's next-token
    distribution is otherwise almost flat (p ~ 1/vocab), and no adapter can make a loop likely."""
    from tiny_models import tiny_mixtral

    model, path = tiny_mixtral(), tmp_path_factory.mktemp("peaked-mixtral")
    with torch.no_grad():
        model.lm_head.weight.mul_(50.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_the_pass_lowers_the_probability_of_a_loop_the_adapter_had_learned(peaked_checkpoint, tmp_path):
    prompt = [{"role": "system", "content": "You are Mira."}, {"role": "user", "content": "Are you coming?"}]
    looping = tmp_path / "looping"  # an adapter that has learned to say the loop
    train_lora_sft([{"prompt": prompt, "completion": [{"role": "assistant", "content": LOOP}]}], looping,
                   model_dir=peaked_checkpoint, config=LoraSFTConfig(steps=16, batch_size=1, learning_rate=3e-2,
                                                                   max_length=640))  # fmt: skip
    rows = [{"prompt": prompt, "reply": LOOP, "anchor": "I'll meet you by the well at dawn."}]
    settings = UnlikelihoodConfig(steps=8, batch_size=1, learning_rate=1e-2)
    summary = train_unlikelihood(
        rows, looping, tmp_path / "out", model_dir=peaked_checkpoint, settings=settings
    )
    assert summary["loops"] == 1 and summary["anchors"] == 1
    assert summary["repeat_p_before"] > 5 / VOCAB  # the loop was learned: well above a flat distribution
    assert summary["repeat_p_after"] < 0.25 * summary["repeat_p_before"]
    before, after = (load_file(str(p / "adapter_model.safetensors")) for p in (looping, tmp_path / "out"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ConfigError, match="nothing to unlearn"):
        train_unlikelihood([{"prompt": prompt, "reply": "A plain reply.", "anchor": None}], looping,
                           tmp_path / "none", model_dir=peaked_checkpoint, settings=settings)  # fmt: skip
