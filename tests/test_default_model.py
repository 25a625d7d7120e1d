"""The real default backbone: SmolLM2-135M-Instruct, upcycled to 4 experts, from the local cache."""

import asyncio
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM, MixtralForCausalLM

from companion.backbone import BackboneConfig, GenerationParams, HFBackbone, RoutingConfig, RoutingStats
from companion.backbone.provision import MARKER, find_default_gguf, is_provisioned
from companion.backbone.routing import install_routing

pytestmark = pytest.mark.slow

CHAT = [
    {"role": "system", "content": "You are Mira, the innkeeper of the Copper Kettle."},
    {"role": "user", "content": "I've been craving hotpot lately. What do you have tonight?"},
]


@pytest.fixture(scope="module")
def dense_and_moe(default_paths):
    dense = AutoModelForCausalLM.from_pretrained(default_paths.dense_dir, local_files_only=True).eval()
    moe = AutoModelForCausalLM.from_pretrained(default_paths.moe_dir, local_files_only=True).eval()
    return dense, moe


def test_cache_holds_both_checkpoints_with_provenance(default_paths):
    assert find_default_gguf().is_file()
    for path in (default_paths.dense_dir, default_paths.moe_dir):
        assert is_provisioned(path)
        assert list(path.glob("*.safetensors"))
    assert json.loads((default_paths.moe_dir / MARKER).read_text())["n_experts"] == 4


@pytest.mark.parametrize(
    "routing",
    [
        RoutingConfig(policy="top_k"),
        RoutingConfig(policy="top_p", top_p=0.4),
        RoutingConfig(policy="top_p", top_p=0.9),
    ],
    ids=["top2", "top_p0.4", "top_p0.9"],
)
def test_upcycled_moe_logits_equal_dense(dense_and_moe, tokenizer, routing):
    dense, moe = dense_and_moe
    assert isinstance(dense, LlamaForCausalLM) and isinstance(moe, MixtralForCausalLM)
    install_routing(moe, routing)
    ids = tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        diff = (moe(**ids).logits - dense(**ids).logits).abs().max().item()
    assert diff < 1e-3


def test_default_backbone_streams_a_reply_with_routing_stats():
    backbone = HFBackbone.from_config(BackboneConfig(routing=RoutingConfig(policy="top_p", top_p=0.4)))
    stats = RoutingStats()
    params = GenerationParams(max_new_tokens=12, temperature=0)

    async def run():
        return [d async for d in backbone.stream(CHAT, params=params, routing_stats=stats)]

    deltas = asyncio.run(run())
    backbone.close()
    text = "".join(deltas)
    assert len(deltas) >= 3 and len(text.split()) >= 3
    per_layer = stats.mean_experts_per_token()
    assert len(per_layer) == 30 and all(1.0 <= m <= 4.0 for m in per_layer)
