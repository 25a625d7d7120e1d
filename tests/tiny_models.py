"""Tiny, randomly initialised models built from configs, for fast tests of real logic."""

from __future__ import annotations

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
)

VOCAB = 49152  # the default tokenizer's vocabulary, so tiny models can share it
_DIMS = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**_DIMS)).eval()


def tiny_mixtral(seed: int = 0, n_experts: int = 4) -> MixtralForCausalLM:
    torch.manual_seed(seed)
    config = MixtralConfig(**_DIMS, num_local_experts=n_experts, num_experts_per_tok=2, sliding_window=None)
    model = MixtralForCausalLM(config).eval()
    with torch.no_grad():  # a router with some spread, so routing decisions differ per token
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 1.0)
    return model


def tiny_qwen2_moe(seed: int = 0) -> Qwen2MoeForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2MoeConfig(
        **_DIMS,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=True,
    )
    return Qwen2MoeForCausalLM(config).eval()


def tiny_olmoe(seed: int = 0) -> OlmoeForCausalLM:
    torch.manual_seed(seed)
    config = OlmoeConfig(**_DIMS, num_experts=4, num_experts_per_tok=2)
    return OlmoeForCausalLM(config).eval()
