"""Routing as pure functions and as the router installed in a model."""

import pytest
import torch

from companion.backbone.config import RoutingConfig
from companion.backbone.routing import (
    DynamicRouter,
    RoutingStats,
    install_routing,
    load_balance_loss,
    route_top_k,
    route_top_p,
    routers_of,
    routing_entropy,
    soft_experts_per_token,
)
from companion.errors import ConfigError
from tiny_models import tiny_llama, tiny_mixtral


def _probs(n_tokens=64, n_experts=8, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n_tokens, n_experts, generator=g) * scale, dim=-1)


def test_top_p_near_zero_keeps_exactly_one_expert_the_most_probable():
    probs = _probs()
    weights, index = route_top_p(probs, 1e-6)
    kept = index < probs.shape[1]
    assert kept.sum(dim=-1).eq(1).all()
    assert torch.equal(index[:, 0], probs.argmax(dim=-1))
    assert torch.allclose(weights[:, 0], torch.ones(len(probs)))


def test_top_p_one_keeps_every_expert_even_a_vanishing_one():
    probs = _probs(scale=30.0)  # some probabilities underflow next to the cumulative sum
    _, index = route_top_p(probs, 1.0)
    assert (index < probs.shape[1]).all()
    assert torch.equal(index.sort(dim=-1).values, torch.arange(8).expand(len(probs), 8))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8, 0.99, 1.0])
def test_top_p_weights_sum_to_one_and_cover_p(p):
    probs = _probs()
    weights, index = route_top_p(probs, p)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(len(probs)), atol=1e-6)
    kept = index < probs.shape[1]
    covered = torch.where(kept, probs.gather(1, index.clamp(max=7)), torch.zeros_like(probs)).sum(-1)
    assert (covered >= p - 1e-6).all()  # enough experts to reach p
    # ...and no more than needed: without its least probable kept expert, a token is below p
    n_kept = kept.sum(-1)
    multi = n_kept > 1
    smallest = torch.where(kept, probs.gather(1, index.clamp(max=7)), torch.ones_like(probs)).min(-1).values
    assert ((covered - smallest)[multi] < p + 1e-6).all()
    assert (weights[~kept] == 0).all()


def test_top_p_uses_more_experts_when_the_router_is_unsure():
    sure = torch.softmax(torch.tensor([[8.0, 0.0, 0.0, 0.0]]), -1)
    unsure = torch.full((1, 4), 0.25)
    assert (route_top_p(sure, 0.5)[1] < 4).sum() == 1
    assert (route_top_p(unsure, 0.5)[1] < 4).sum() == 2


def test_top_k_weights_sum_to_one():
    weights, index = route_top_k(_probs(), 2)
    assert weights.shape == index.shape == (64, 2)
    assert torch.allclose(weights.sum(-1), torch.ones(64), atol=1e-6)


def test_load_balance_loss_is_one_when_uniform_and_higher_when_collapsed():
    n = 4
    uniform_probs = torch.full((8, n), 1 / n)
    uniform_index = torch.arange(8).remainder(n).unsqueeze(1)
    assert load_balance_loss(uniform_probs, uniform_index, n).item() == pytest.approx(1.0)
    collapsed_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(8, 1)
    collapsed_index = torch.zeros(8, 1, dtype=torch.long)
    assert load_balance_loss(collapsed_probs, collapsed_index, n).item() > 3.5


def test_routing_entropy_bounds():
    assert routing_entropy(torch.full((3, 4), 0.25)).item() == pytest.approx(
        torch.log(torch.tensor(4.0)).item()
    )
    assert routing_entropy(torch.tensor([[1.0, 0, 0, 0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_install_routing_keeps_parameter_names_and_records_stats():
    model = tiny_mixtral()
    keys_before = set(model.state_dict())
    routers = install_routing(model, RoutingConfig(policy="top_p", top_p=1.0))
    assert len(routers) == model.config.num_hidden_layers
    assert set(model.state_dict()) == keys_before
    stats = RoutingStats()
    for r in routers:
        r.stats = stats
    with torch.no_grad():
        model(torch.randint(0, 1000, (2, 7)))
    assert stats.mean_experts_per_token() == [4.0, 4.0]
    assert stats.tokens == {0: 14, 1: 14}


def test_top_p_spends_fewer_experts_on_confident_tokens_in_a_model():
    model = tiny_mixtral()
    routers = install_routing(model, RoutingConfig(policy="top_p", top_p=0.5))
    stats = RoutingStats()
    for r in routers:
        r.stats = stats
    with torch.no_grad():
        model(torch.randint(0, 1000, (4, 16)))
    mean = stats.overall_mean()
    assert 1.0 <= mean < 4.0


def test_reinstalling_reconfigures_existing_routers():
    model = tiny_mixtral()
    install_routing(model, RoutingConfig(policy="top_p", top_p=0.3))
    routers = install_routing(model, RoutingConfig(policy="top_k", n_experts_per_token=3))
    assert all(isinstance(r, DynamicRouter) and r.top_k == 3 and r.policy == "top_k" for r in routers)
    assert routers_of(model) == routers


def test_dense_models_get_no_router():
    assert install_routing(tiny_llama(), RoutingConfig(policy="top_p")) == []


@pytest.mark.parametrize(
    "kwargs", [{"policy": "top_q"}, {"top_p": 0.0}, {"top_p": 1.5}, {"n_experts_per_token": 0}]
)
def test_routing_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        RoutingConfig(**kwargs)


def test_the_soft_expert_count_follows_top_p_and_carries_a_gradient():
    logits = torch.log(
        torch.tensor([[0.25] * 4, [0.7, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]])
    ).requires_grad_()
    count = soft_experts_per_token(torch.softmax(logits, dim=-1), 0.4, sharpness=0.01)
    assert count.item() == pytest.approx(5 / 3, abs=0.02)  # top-p 0.4 picks 2, 1 and 2 experts
    count.backward()
    assert logits.grad.abs().sum() > 0
