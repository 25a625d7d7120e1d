"""Which engine serves: one place that builds any of them from its config.

- `hf`: transformers + peft in-process; the reference (training parity, dynamic top-p
  routing, routing statistics), CPU or GPU.
- `llamacpp`: llama.cpp in-process with continuous batching across players; the fastest
  offline engine on a CPU, and what `auto` picks when llama-cpp-python is installed.
- `openai`: any OpenAI-compatible server (vLLM, llama.cpp's server, SGLang, Ollama), for
  bigger models and scale-out.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Literal

from companion.backbone.config import BackboneConfig
from companion.backbone.llamacpp_config import LlamaCppConfig
from companion.backbone.openai_engine import OpenAIEngineConfig
from companion.errors import ConfigError
from companion.protocols import Generator

log = logging.getLogger(__name__)

EngineKind = Literal["auto", "llamacpp", "hf", "openai"]
ENGINE_KINDS = ("auto", "llamacpp", "hf", "openai")


def resolve_engine_kind(kind: str, model: str = "default") -> str:
    """`auto` becomes `llamacpp` when llama-cpp-python is installed and the model is the default
    or a .gguf file, else `hf`; other kinds are returned as they are.

    Raises:
        ConfigError: an unknown kind.
    """
    if kind not in ENGINE_KINDS:
        raise ConfigError(f"engine is {kind!r}; expected one of {', '.join(ENGINE_KINDS)}.")
    if kind != "auto":
        return kind
    servable = model == "default" or model.endswith(".gguf")
    if servable and importlib.util.find_spec("llama_cpp") is not None:
        return "llamacpp"
    return "hf"


def build_engine(
    kind: str,
    *,
    hf: BackboneConfig | None = None,
    llamacpp: LlamaCppConfig | None = None,
    openai: OpenAIEngineConfig | None = None,
) -> Generator:
    """Loads the engine `kind` names from its config (defaults where a config is None).

    Raises:
        ConfigError: an unknown kind.
        ModelNotProvisionedError / ModelLoadFailedError: the model is not there or did not load.
    """
    model = (llamacpp.model if llamacpp else None) or (hf.model if hf else "default")
    kind = resolve_engine_kind(kind, model)
    log.info("engine: %s", kind)
    if kind == "hf":
        from companion.backbone.hf_engine import HFBackbone

        return HFBackbone.from_config(hf)
    if kind == "llamacpp":
        from companion.backbone.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine.from_config(llamacpp)
    from companion.backbone.openai_engine import OpenAIEngine

    return OpenAIEngine.from_config(openai or OpenAIEngineConfig())
