"""Sparse upcycling: a dense Llama-layout model becomes a Mixtral-layout MoE.

Each MLP is copied into `n_experts` identical experts and a fresh router is added
(Komatsuzaki et al., "Sparse Upcycling", 2022). Because the experts are identical and
kept routing weights are renormalised, the MoE's logits equal the dense model's at
init, whatever the router says; training then lets the experts diverge.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from companion.errors import ConfigError


def mixtral_config_from_llama(
    dense: LlamaConfig, *, n_experts: int, n_experts_per_token: int = 2
) -> MixtralConfig:
    """The MixtralConfig with the dense model's dimensions and `n_experts` experts per layer."""
    if dense.model_type != "llama":
        raise ConfigError(
            f"upcycling takes a Llama-layout model; got model_type={dense.model_type!r}. "
            "MoE checkpoints (Mixtral, Qwen2-MoE, OLMoE) load as they are, without upcycling."
        )
    if getattr(dense, "mlp_bias", False) or getattr(dense, "attention_bias", False):
        raise ConfigError("upcycling needs a Llama model without MLP or attention biases; Mixtral has none.")
    if not 1 <= n_experts_per_token <= n_experts:
        raise ConfigError(
            f"n_experts_per_token={n_experts_per_token} must lie in [1, n_experts={n_experts}]."
        )
    return MixtralConfig(
        vocab_size=dense.vocab_size,
        hidden_size=dense.hidden_size,
        intermediate_size=dense.intermediate_size,
        num_hidden_layers=dense.num_hidden_layers,
        num_attention_heads=dense.num_attention_heads,
        num_key_value_heads=dense.num_key_value_heads,
        head_dim=getattr(dense, "head_dim", None) or dense.hidden_size // dense.num_attention_heads,
        hidden_act=dense.hidden_act,
        max_position_embeddings=dense.max_position_embeddings,
        initializer_range=dense.initializer_range,
        rms_norm_eps=dense.rms_norm_eps,
        rope_parameters=dict(dense.rope_parameters),
        tie_word_embeddings=dense.tie_word_embeddings,
        bos_token_id=dense.bos_token_id,
        eos_token_id=dense.eos_token_id,
        pad_token_id=dense.pad_token_id,
        num_local_experts=n_experts,
        num_experts_per_tok=n_experts_per_token,
        sliding_window=None,
        router_aux_loss_coef=0.01,
        output_router_logits=False,
    )


@torch.no_grad()
def upcycle_llama_to_mixtral(
    dense: LlamaForCausalLM,
    *,
    n_experts: int = 4,
    n_experts_per_token: int = 2,
    router_init_std: float | None = None,
    seed: int = 0,
) -> MixtralForCausalLM:
    """Builds the MoE: shared weights copied as they are, each MLP copied into every expert.

    Args:
        dense: a Llama-layout causal LM (e.g. SmolLM2).
        n_experts: experts per layer.
        n_experts_per_token: k saved in the config (routing can be changed at load).
        router_init_std: std of the fresh routers' normal init; None uses the model's
            initializer_range.
        seed: seeds the router init so that the same dense model gives the same MoE.

    Returns:
        A MixtralForCausalLM in eval mode, same dtype as `dense`.
    """
    config = mixtral_config_from_llama(
        dense.config, n_experts=n_experts, n_experts_per_token=n_experts_per_token
    )
    dtype = next(dense.parameters()).dtype
    with torch.device("meta"):
        moe = MixtralForCausalLM(config)
    moe = moe.to_empty(device="cpu").to(dtype)
    state = _moe_state_dict(dense, n_experts)
    generator = torch.Generator().manual_seed(seed)
    std = router_init_std if router_init_std is not None else config.initializer_range
    for i in range(config.num_hidden_layers):
        router = torch.randn(n_experts, config.hidden_size, generator=generator) * std  # (n_experts, hidden)
        state[f"model.layers.{i}.mlp.gate.weight"] = router.to(dtype)
    missing, unexpected = moe.load_state_dict(state, strict=False)
    # lm_head is tied to the embeddings; rotary buffers are not in a state dict.
    missing = [k for k in missing if k != "lm_head.weight" and "rotary_emb" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    if config.tie_word_embeddings:
        moe.tie_weights()
    moe.model.rotary_emb = type(moe.model.rotary_emb)(config=config)
    moe.generation_config = dense.generation_config
    return moe.eval()


def _moe_state_dict(dense: LlamaForCausalLM, n_experts: int) -> dict[str, torch.Tensor]:
    """Renames the dense state dict into Mixtral's, fusing and repeating each MLP."""
    state: dict[str, torch.Tensor] = {}
    dense_state = dense.state_dict()
    for key, value in dense_state.items():
        if ".mlp." in key:
            continue
        state[key] = value
    for i in range(dense.config.num_hidden_layers):
        prefix = f"model.layers.{i}.mlp"
        gate = dense_state[f"{prefix}.gate_proj.weight"]  # (intermediate, hidden)
        up = dense_state[f"{prefix}.up_proj.weight"]  # (intermediate, hidden)
        down = dense_state[f"{prefix}.down_proj.weight"]  # (hidden, intermediate)
        gate_up = torch.cat([gate, up], dim=0)  # (2*intermediate, hidden)
        state[f"{prefix}.experts.gate_up_proj"] = gate_up.unsqueeze(0).repeat(n_experts, 1, 1).contiguous()
        state[f"{prefix}.experts.down_proj"] = down.unsqueeze(0).repeat(n_experts, 1, 1).contiguous()
    return state


def llama_config_from_mixtral(moe: MixtralConfig) -> LlamaConfig:
    """The dense LlamaConfig with the MoE's dimensions (the inverse of `mixtral_config_from_llama`)."""
    return LlamaConfig(
        vocab_size=moe.vocab_size,
        hidden_size=moe.hidden_size,
        intermediate_size=moe.intermediate_size,
        num_hidden_layers=moe.num_hidden_layers,
        num_attention_heads=moe.num_attention_heads,
        num_key_value_heads=moe.num_key_value_heads,
        head_dim=moe.head_dim,
        hidden_act=moe.hidden_act,
        max_position_embeddings=moe.max_position_embeddings,
        initializer_range=moe.initializer_range,
        rms_norm_eps=moe.rms_norm_eps,
        rope_parameters=dict(moe.rope_parameters),
        tie_word_embeddings=moe.tie_word_embeddings,
        bos_token_id=moe.bos_token_id,
        eos_token_id=moe.eos_token_id,
        pad_token_id=moe.pad_token_id,
    )


@torch.no_grad()
def collapse_identical_experts(moe: MixtralForCausalLM) -> LlamaForCausalLM | None:
    """The dense model an MoE equals when every layer's experts are identical; None when they differ.

    With identical experts and renormalised top-k weights, every token's MLP output is
    that one expert's, whatever the router says: the MoE *is* a dense model that costs k
    times its MLP compute (and, batched, touches every expert's weights). Serving the
    collapsed model is lossless; once training lets the experts diverge this returns
    None and the MoE is served as it is.

    Args:
        moe: a Mixtral-layout model (fused experts, transformers 5).

    Returns:
        A LlamaForCausalLM in eval mode with the MoE's attention, norms, embeddings and
        its (single) expert as the MLP, or None.
    """
    config = moe.config
    if not getattr(config, "norm_topk_prob", True) and config.num_experts_per_tok > 1:
        return None  # unnormalised weights scale the expert: not a dense model
    state: dict[str, torch.Tensor] = {}
    for key, value in moe.state_dict().items():
        if ".mlp." not in key:
            state[key] = value
    inter = config.intermediate_size
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}.mlp"
        gate_up = moe.state_dict()[f"{prefix}.experts.gate_up_proj"]  # (n_experts, 2*intermediate, hidden)
        down = moe.state_dict()[f"{prefix}.experts.down_proj"]  # (n_experts, hidden, intermediate)
        if not (
            torch.equal(gate_up, gate_up[:1].expand_as(gate_up))
            and torch.equal(down, down[:1].expand_as(down))
        ):
            return None
        state[f"{prefix}.gate_proj.weight"] = gate_up[0, :inter].clone()
        state[f"{prefix}.up_proj.weight"] = gate_up[0, inter:].clone()
        state[f"{prefix}.down_proj.weight"] = down[0].clone()
    dense_config = llama_config_from_mixtral(config)
    with torch.device("meta"):
        dense = LlamaForCausalLM(dense_config)
    dense = dense.to_empty(device="cpu").to(next(moe.parameters()).dtype)
    missing, unexpected = dense.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and "rotary_emb" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    if dense_config.tie_word_embeddings:
        dense.tie_weights()
    dense.model.rotary_emb = type(dense.model.rotary_emb)(config=dense_config)
    return dense.eval()
