"""The language-model backbone: provisioning, MoE upcycling, routing, LoRA adapters, streaming.

The public surface:

- `BackboneConfig`, `RoutingConfig`, `GenerationParams`: what to load and how to decode.
- `HFBackbone.from_config(config)`: the `hf` engine, a loaded model (transformers + peft)
  with `stream`, `generate`, `generate_batch`, adapter management and routing statistics.
- `engines.build_engine(kind, ...)`: any engine (`hf`, `llamacpp`, `openai`) behind the
  `companion.protocols.Generator` interface.
- `prepare_default_model()`: builds the offline default (SmolLM2-135M-Instruct upcycled to
  an MoE) in the local cache once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from companion.backbone.config import BackboneConfig, GenerationParams, RoutingConfig

if TYPE_CHECKING:
    from companion.backbone.hf_engine import HFBackbone
    from companion.backbone.provision import default_cache_dir, prepare_default_model
    from companion.backbone.routing import RoutingStats

__all__ = [
    "BackboneConfig",
    "GenerationParams",
    "HFBackbone",
    "RoutingConfig",
    "RoutingStats",
    "default_cache_dir",
    "prepare_default_model",
]

# torch-backed names load on first use, so importing the light config (`companion.backbone.config`,
# e.g. for a command's --help) does not pull in torch and transformers.
_LAZY = {
    "HFBackbone": "companion.backbone.hf_engine",
    "RoutingStats": "companion.backbone.routing",
    "default_cache_dir": "companion.backbone.provision",
    "prepare_default_model": "companion.backbone.provision",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'companion.backbone' has no attribute {name!r}")
