"""Sparse upcycling on tiny models: identical experts make the MoE equal the dense model."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MixtralForCausalLM

from companion.backbone.config import RoutingConfig
from companion.backbone.routing import install_routing
from companion.backbone.upcycle import upcycle_llama_to_mixtral
from companion.errors import ConfigError
from tiny_models import tiny_llama


@pytest.fixture(scope="module")
def dense():
    return tiny_llama(seed=1)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 5000, (3, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "routing",
    [
        RoutingConfig(policy="top_k"),
        RoutingConfig(policy="top_k", n_experts_per_token=1),
        RoutingConfig(policy="top_p", top_p=1e-6),
        RoutingConfig(policy="top_p", top_p=0.5),
        RoutingConfig(policy="top_p", top_p=1.0),
    ],
    ids=["top2", "top1", "top_p~0", "top_p0.5", "top_p1"],
)
@pytest.mark.parametrize("experts_implementation", ["eager", "grouped_mm", "batched_mm"])
def test_upcycled_logits_equal_dense(dense, tokens, routing, experts_implementation):
    moe = upcycle_llama_to_mixtral(dense, n_experts=4, router_init_std=1.0)
    moe.set_experts_implementation(experts_implementation)
    install_routing(moe, routing)
    with torch.no_grad():
        diff = (moe(tokens).logits - dense(tokens).logits).abs().max().item()
    assert diff < 1e-4


def test_experts_are_copies_and_router_is_fresh(dense):
    moe = upcycle_llama_to_mixtral(dense, n_experts=3)
    layer = moe.model.layers[0].mlp
    dense_mlp = dense.model.layers[0].mlp
    expected_gate_up = torch.cat([dense_mlp.gate_proj.weight, dense_mlp.up_proj.weight], dim=0)
    for e in range(3):
        assert torch.equal(layer.experts.gate_up_proj[e], expected_gate_up)
        assert torch.equal(layer.experts.down_proj[e], dense_mlp.down_proj.weight)
    assert layer.experts.gate_up_proj.shape == (3, 2 * 64, 32)
    assert layer.gate.weight.shape == (3, 32)
    assert layer.gate.weight.abs().sum() > 0


def test_same_seed_same_router(dense):
    a = upcycle_llama_to_mixtral(dense, seed=5)
    b = upcycle_llama_to_mixtral(dense, seed=5)
    assert torch.equal(a.model.layers[1].mlp.gate.weight, b.model.layers[1].mlp.gate.weight)


def test_saved_checkpoint_loads_as_standard_mixtral(dense, tokens, tmp_path):
    moe = upcycle_llama_to_mixtral(dense, n_experts=4)
    moe.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    assert isinstance(loaded, MixtralForCausalLM)
    assert loaded.config.num_local_experts == 4
    with torch.no_grad():
        assert torch.allclose(loaded(tokens).logits, dense(tokens).logits, atol=1e-4)


def test_upcycling_rejects_non_llama_and_bad_k(dense):
    with pytest.raises(ConfigError, match="n_experts_per_token"):
        upcycle_llama_to_mixtral(dense, n_experts=2, n_experts_per_token=3)
    from companion.backbone.upcycle import mixtral_config_from_llama

    cfg = LlamaConfig(mlp_bias=True)
    with pytest.raises(ConfigError, match="biases"):
        mixtral_config_from_llama(cfg, n_experts=4)
