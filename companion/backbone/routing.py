"""Expert routing: top-k and dynamic top-p, as pure functions and as a drop-in router.

transformers 5 MoE blocks (Mixtral, Qwen2/3-MoE, OLMoE) call `mlp.gate(hidden)` and get
`(router_logits, weights, expert_index)`; the fused experts skip any index equal to
`n_experts` (the sentinel). `DynamicRouter` keeps that contract and the router's weight
parameter (so checkpoints and peft see the same names), and swaps only the selection
rule. Dynamic top-p follows "Harder Tasks Need More Experts: Dynamic Routing in MoE
Models" (Huang et al., 2024), with kept weights renormalised so that an upcycled model
(identical experts) still equals its dense parent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from companion.backbone.config import RoutingConfig
from companion.errors import UnsupportedRoutingError


def route_top_k(probs: torch.Tensor, k: int, *, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Keeps the k most probable experts of each token.

    Args:
        probs: (n_tokens, n_experts) router probabilities (rows sum to 1).
        k: experts per token, 1 <= k <= n_experts.
        normalize: rescale the kept probabilities to sum to 1.

    Returns:
        (weights, index), both (n_tokens, k): the kept experts' weights and ids.
    """
    weights, index = torch.topk(probs, k, dim=-1)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, index


def route_top_p(probs: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic routing: adds experts by probability until their sum reaches p.

    An expert is kept when the probability of the experts ranked before it is still
    below p, so the most probable expert is always kept and p = 1 keeps every expert.

    Args:
        probs: (n_tokens, n_experts) router probabilities (rows sum to 1).
        p: threshold in (0, 1].

    Returns:
        (weights, index), both (n_tokens, n_experts), sorted by probability. Dropped
        slots hold the sentinel id n_experts and weight 0; kept weights sum to 1.
    """
    n_experts = probs.shape[-1]
    sorted_probs, index = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # (n_tokens, n_experts)
    keep = before < p
    if p >= 1.0:  # float round-off must not drop a last, tiny expert
        keep = torch.ones_like(keep)
    keep[:, 0] = True
    weights = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
    weights = weights / weights.sum(dim=-1, keepdim=True)
    index = torch.where(keep, index, torch.full_like(index, n_experts))
    return weights, index


def load_balance_loss(probs: torch.Tensor, index: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch-Transformer load-balancing loss, n_experts * sum_i f_i * P_i.

    Args:
        probs: (n_tokens, n_experts) router probabilities.
        index: (n_tokens, slots) chosen expert ids; ids >= n_experts are sentinels.
        n_experts: number of experts.

    Returns:
        A scalar; 1.0 when load and probability are both uniform.
    """
    chosen = F.one_hot(index.clamp(max=n_experts), n_experts + 1)[..., :n_experts].sum(dim=1).float()
    fraction = chosen.sum(dim=0) / chosen.sum().clamp(min=1.0)  # (n_experts,)
    mean_prob = probs.float().mean(dim=0)  # (n_experts,)
    return n_experts * torch.sum(fraction * mean_prob)


def routing_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy -sum p log p of the router distributions, (n_tokens, n_experts) -> scalar.

    Minimising it beside the load-balancing loss sharpens top-p routing, so easy tokens
    settle on fewer experts (Huang et al., 2024, eq. 6).
    """
    logp = torch.log(probs.float().clamp(min=1e-20))
    return -(probs.float() * logp).sum(dim=-1).mean()


def soft_experts_per_token(probs: torch.Tensor, top_p: float, sharpness: float = 0.05) -> torch.Tensor:
    """A differentiable mean of how many experts top-p routing picks per token.

    Top-p takes experts in order of probability until their sum reaches p, so it picks
    1 + #{k < n_experts : c_k < p}, where c_k is the sum of the k largest probabilities.
    Each indicator becomes sigmoid((p - c_k) / sharpness); (n_tokens, n_experts) -> scalar.
    """
    ordered, _ = probs.float().sort(dim=-1, descending=True)
    cumulative = ordered.cumsum(dim=-1)[:, :-1]
    return (1 + torch.sigmoid((top_p - cumulative) / sharpness).sum(dim=-1)).mean()


@dataclass
class RoutingStats:
    """Experts used per token, per layer, over every token a model processed (prompt and reply).

    Attributes:
        expert_slots: layer index -> total experts selected.
        tokens: layer index -> tokens routed.
    """

    expert_slots: dict[int, int] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, layer: int, n_selected: torch.Tensor) -> None:
        """Adds one router call: `n_selected` is (n_tokens,) experts chosen per token."""
        slots, count = int(n_selected.sum()), int(n_selected.numel())
        with self._lock:
            self.expert_slots[layer] = self.expert_slots.get(layer, 0) + slots
            self.tokens[layer] = self.tokens.get(layer, 0) + count

    def mean_experts_per_token(self) -> list[float]:
        """Mean experts per token for each layer, in layer order."""
        return [self.expert_slots[i] / max(self.tokens[i], 1) for i in sorted(self.tokens)]

    def overall_mean(self) -> float:
        """Mean over layers of the per-layer means; 0.0 when nothing was routed."""
        per_layer = self.mean_experts_per_token()
        return sum(per_layer) / len(per_layer) if per_layer else 0.0


class DynamicRouter(nn.Module):
    """A router for transformers' fused MoE blocks with a selectable policy.

    Args:
        weight: (n_experts, hidden) router weight, shared with the replaced router.
        config: policy and its parameters.
        default_k: the checkpoint's own experts per token.
        normalize_top_k: whether top-k weights are renormalised (the checkpoint's rule).
        layer: index used in routing statistics.
    """

    def __init__(
        self,
        weight: nn.Parameter,
        config: RoutingConfig,
        *,
        default_k: int,
        normalize_top_k: bool = True,
        layer: int = 0,
    ) -> None:
        super().__init__()
        self.weight = weight
        self.num_experts, self.hidden_dim = weight.shape
        self.policy = config.policy
        self.top_k = min(config.n_experts_per_token or default_k, self.num_experts)
        self.top_p = config.top_p
        self.normalize_top_k = normalize_top_k
        self.layer = layer
        self.stats: RoutingStats | None = None

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)  # (n_tokens, n_experts)
        probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
        if self.policy == "top_p":
            weights, index = route_top_p(probs, self.top_p)
        else:
            weights, index = route_top_k(probs, self.top_k, normalize=self.normalize_top_k)
        if self.stats is not None:
            self.stats.record(self.layer, (index < self.num_experts).sum(dim=-1))
        return router_logits, weights.to(router_logits.dtype), index

    def extra_repr(self) -> str:
        rule = f"top_p={self.top_p}" if self.policy == "top_p" else f"top_k={self.top_k}"
        return f"n_experts={self.num_experts}, {rule}, layer={self.layer}"


def _is_fused_topk_router(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__.endswith("TopKRouter")
        and isinstance(weight, nn.Parameter)
        and weight.dim() == 2
        and hasattr(module, "top_k")
    )


def install_routing(model: nn.Module, config: RoutingConfig) -> list[DynamicRouter]:
    """Replaces every MoE router of `model` by a `DynamicRouter` following `config`.

    Routers already replaced are reconfigured. A dense model gets none and returns [].

    Raises:
        UnsupportedRoutingError: the model declares experts but has no router of the
            fused top-k kind (e.g. GraniteMoE), and a non-default policy was asked for.
    """
    installed: list[DynamicRouter] = []
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if name.endswith(".gate") and (isinstance(module, DynamicRouter) or _is_fused_topk_router(module))
    ]
    for layer, (name, old) in enumerate(targets):
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        default_k = old.top_k if not isinstance(old, DynamicRouter) else _native_k(model, old)
        normalize = getattr(old, "norm_topk_prob", getattr(old, "normalize_top_k", True))
        router = DynamicRouter(
            old.weight, config, default_k=default_k, normalize_top_k=normalize, layer=layer
        )
        parent.gate = router
        _enable_sentinel_slots(getattr(parent, "experts", None))
        installed.append(router)
    if (
        not installed
        and _declares_experts(model)
        and (config.policy != "top_k" or config.n_experts_per_token)
    ):
        raise UnsupportedRoutingError(
            f"{type(model).__name__} declares experts but has no fused top-k router Companion can drive; "
            "use routing policy 'top_k' without n_experts_per_token to keep its own routing."
        )
    return installed


def _enable_sentinel_slots(experts: nn.Module | None) -> None:
    """Makes the fused-experts kernels skip sentinel slots (ids >= n_experts) exactly.

    transformers 5's eager kernel skips them always; its grouped_mm / batched_mm kernels
    mask them only under `_is_expert_parallel`, which gates nothing but that masking
    (integrations/moe.py). Without it, top-p's dropped slots read uninitialised rows and
    NaN * 0 poisons the output.
    """
    if experts is not None and hasattr(experts, "_is_expert_parallel"):
        experts._is_expert_parallel = True


def _native_k(model: nn.Module, router: DynamicRouter) -> int:
    return int(getattr(model.config, "num_experts_per_tok", router.top_k))


def _declares_experts(model: nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    return any(getattr(cfg, key, 0) for key in ("num_local_experts", "num_experts"))


def routers_of(model: nn.Module) -> list[DynamicRouter]:
    """The `DynamicRouter`s installed in `model`, in layer order."""
    return [m for m in model.modules() if isinstance(m, DynamicRouter)]
