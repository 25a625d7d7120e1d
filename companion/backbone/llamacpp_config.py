"""Configuration of the llamacpp engine, and where its GGUF file comes from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from companion.backbone.config import DEFAULT_MODEL, dataclass_from_yaml
from companion.errors import ConfigError, ModelLoadFailedError, ModelNotProvisionedError

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
        n_slots: sequences held at once: replies in flight plus cached conversations
            (a conversation's next turn reuses its slot's cache).
        n_ctx_per_slot: tokens one sequence holds (prompt + reply).
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
    n_slots: int = 24
    n_ctx_per_slot: int = 1024
    n_batch: int = 256
    n_threads: int | None = None
    base_checkpoint: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.gguf_type not in GGUF_TYPES:
            raise ConfigError(f"gguf_type is {self.gguf_type!r}; expected one of {', '.join(GGUF_TYPES)}.")
        if not 1 <= self.n_slots <= 256:
            raise ConfigError(f"n_slots is {self.n_slots}; expected 1 to 256.")
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
    from companion.backbone.provision import default_model_paths, is_provisioned

    if config.model == DEFAULT_MODEL:
        paths = default_model_paths(config.resolved_cache_dir(), config.n_experts)
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
