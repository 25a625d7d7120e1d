"""Token choice for engines that hand back raw logits: the same semantics as transformers' processors."""

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from companion.backbone.sampling import apply_repetition_penalty, choose_token, nucleus_probabilities


@pytest.fixture()
def logits():
    return np.random.default_rng(0).normal(0, 3, size=5000).astype(np.float32)


def test_repetition_penalty_matches_transformers(logits):
    seen = [3, 17, 17, 4000, 42]
    ours = apply_repetition_penalty(logits, seen, 1.3)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([seen]), torch.tensor(logits)[None])[
        0
    ].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert np.array_equal(apply_repetition_penalty(logits, seen, 1.0), logits)


@pytest.mark.parametrize("top_p", [0.3, 0.9, 1.0])
def test_nucleus_keeps_the_tokens_transformers_keeps(logits, top_p):
    ids, probs = nucleus_probabilities(logits, temperature=0.7, top_p=top_p)
    scores = TemperatureLogitsWarper(0.7)(None, torch.tensor(logits)[None])
    warped = TopPLogitsWarper(top_p)(None, scores)[0]
    kept = set(torch.nonzero(torch.isfinite(warped)).flatten().tolist())
    if top_p < 1.0:
        assert set(ids.tolist()) == kept
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-9)
    assert np.all(np.diff(probs) <= 1e-12)  # most probable first


def test_greedy_is_argmax_after_penalty_and_ignores_the_rng(logits):
    best = int(np.argmax(logits))
    rng = np.random.default_rng(1)
    kwargs = dict(temperature=0.0, top_p=0.9, repetition_penalty=1.0, rng=rng)
    assert choose_token(logits, seen=[], **kwargs) == best
    assert choose_token(logits, seen=[best], **{**kwargs, "repetition_penalty": 100.0}) != best
    assert choose_token(logits, seen=[], banned=[best], **kwargs) != best


def test_sampling_is_reproducible_with_a_seed_and_stays_in_the_nucleus(logits):
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [
            choose_token(logits, seen=[], temperature=1.0, top_p=0.5, repetition_penalty=1.0, rng=rng)
            for _ in range(50)
        ]

    assert draw(7) == draw(7)
    kept, _ = nucleus_probabilities(logits, temperature=1.0, top_p=0.5)
    assert set(draw(7)) <= set(kept.tolist())
