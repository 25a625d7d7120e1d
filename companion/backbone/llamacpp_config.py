"""Configuration of the llamacpp engine, and where its GGUF file comes from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from companion.backbone.config import DEFAULT_MODEL
from companion.errors import ConfigError, ModelLoadFailedError, ModelNotProvisionedError
from companion.yaml_config import dataclass_from_yaml

GGUF_TYPES = ("f32", "f16", "q8_0")


@dataclass(frozen=True)
class LlamaCppConfig:
    """What the llamacpp engine loads and how many players it serves at once.

    Attributes:
        model: "default" (the upcycled SmolLM2 MoE, as GGUF from `companion models prepare`)
            or the path of a .gguf file.
        gguf_type: which GGUF of the default model: "q8_0" (fastest here: ~1.7x the f16
            prefill on this CPU), "f16" (greedy output equal to the hf engine's) or "f32".
        n_experts: experts per layer of the default model.
        collapse_identical_experts: while the default MoE's experts are all identical (as
            upcycled, before expert training), serve the dense model it equals exactly:
            same logits, a quarter of the expert weights, and batched decoding that scales
            (measured here: 303 vs 175 tok/s at 24 players). Set False to serve the MoE as
            it is (e.g. to measure it).
        n_lanes: llama.cpp contexts, one per persona adapter busy at the same time (a
            context applies one LoRA to everything in it); more personas than lanes wait
            for a lane to empty. Lanes share the model's weights.
        n_slots_per_lane: sequences a lane holds: replies in flight plus cached
            conversations (a conversation's next turn reuses its slot's cache).
        n_ctx_per_slot: tokens one sequence holds (prompt + reply).
        kv_type: the KV cache's type: "q8_0" (half the memory of f16) or "f16" (greedy
            output equal to the hf engine's).
        n_batch: prompt tokens prefilled per step, shared by the waiting replies; lower
            keeps the streams of replies in progress smoother while others prefill.
        n_threads: CPU threads; None uses every core this process may run on.
        base_checkpoint: the transformers checkpoint a custom GGUF came from; persona
            adapters (peft) are converted against it. Set for the default model.
        cache_dir: cache root; None uses $COMPANION_CACHE_DIR or ~/.cache/companion.
    """

    model: str = DEFAULT_MODEL
    gguf_type: str = "q8_0"
    n_experts: int = 4
    collapse_identical_experts: bool = True
    n_lanes: int = 4
    n_slots_per_lane: int = 8
    n_ctx_per_slot: int = 768
    kv_type: str = "q8_0"
    n_batch: int = 64
    n_threads: int | None = None
    base_checkpoint: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.gguf_type not in GGUF_TYPES:
            raise ConfigError(f"gguf_type is {self.gguf_type!r}; expected one of {', '.join(GGUF_TYPES)}.")
        if not 1 <= self.n_lanes <= 64:
            raise ConfigError(f"n_lanes is {self.n_lanes}; expected 1 to 64.")
        if not 1 <= self.n_slots_per_lane <= 256:
            raise ConfigError(f"n_slots_per_lane is {self.n_slots_per_lane}; expected 1 to 256.")
        if self.kv_type not in ("f16", "q8_0"):
            raise ConfigError(f"kv_type is {self.kv_type!r}; expected 'f16' or 'q8_0'.")
        if self.n_ctx_per_slot < 256:
            raise ConfigError(f"n_ctx_per_slot is {self.n_ctx_per_slot}; expected at least 256 tokens.")
        if self.n_batch < 16:
            raise ConfigError(f"n_batch is {self.n_batch}; expected at least 16 tokens.")
        if self.n_threads is not None and self.n_threads < 1:
            raise ConfigError(f"n_threads is {self.n_threads}; expected an integer >= 1 or unset.")

    @classmethod
    def from_file(cls, path: str | Path) -> LlamaCppConfig:
        return dataclass_from_yaml(cls, path)

    def resolved_cache_dir(self) -> Path:
        from companion.backbone.provision import default_cache_dir

        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


def resolve_gguf(config: LlamaCppConfig) -> tuple[Path, Path | None]:
    """(GGUF file, transformers checkpoint it came from or None).

    Raises:
        ModelNotProvisionedError: the default model's GGUF is not in the cache.
        ModelLoadFailedError: a given path is not a GGUF file.
    """
    from companion.backbone.provision import collapsed_is_current, default_model_paths, is_provisioned

    if config.model == DEFAULT_MODEL:
        paths = default_model_paths(config.resolved_cache_dir(), config.n_experts)
        collapsed = paths.collapsed_gguf(config.gguf_type)
        if config.collapse_identical_experts and collapsed.is_file() and collapsed_is_current(paths):
            return collapsed, paths.moe_dir
        gguf = paths.moe_gguf(config.gguf_type)
        if not gguf.is_file() or not is_provisioned(paths.moe_dir):
            raise ModelNotProvisionedError(
                f"the default model's GGUF file {gguf} is missing; run `companion models prepare` "
                "(scripts/bootstrap does), or use COMPANION_ENGINE=hf."
            )
        return gguf, paths.moe_dir
    path = Path(config.model).expanduser()
    if not path.is_file() or path.suffix != ".gguf":
        raise ModelLoadFailedError(
            f"the llamacpp engine loads GGUF files, and {config.model!r} is not one. Convert a transformers "
            "checkpoint with `companion models export-gguf DIR`, or use COMPANION_ENGINE=hf for it."
        )
    base = Path(config.base_checkpoint).expanduser() if config.base_checkpoint else None
    return path, base
