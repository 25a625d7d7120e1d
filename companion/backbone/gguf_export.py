"""Checkpoints and persona adapters as GGUF files, with llama.cpp's own converters.

llama.cpp reads GGUF. Its converters (`convert_hf_to_gguf.py`, `convert_lora_to_gguf.py`
and the `gguf-py` package they import) ship inside the llama-cpp-python source
distribution, not in its wheel; `scripts/bootstrap` unpacks them once into
`$COMPANION_CACHE_DIR/llama.cpp/<version>/`. Each conversion runs in a child process (the
converters are scripts, not a library), writes aside and renames, so a file that exists
is complete.

Cache layout, beside the safetensors checkpoints:

    models/gguf/smollm2-135m-instruct-moe4.f16.gguf    greedy parity with the hf engine
    models/gguf/smollm2-135m-instruct-moe4.q8_0.gguf   what the llamacpp engine serves
    models/gguf/smollm2-135m-instruct.f16.gguf         the dense parent
    adapters-gguf/<name>-<hash>.f16.gguf               a persona's LoRA, keyed by its weights
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

from companion.backbone.adapters import ADAPTER_WEIGHTS, holds_adapter
from companion.errors import AdapterError, ModelLoadFailedError, ModelNotProvisionedError

log = logging.getLogger(__name__)

LLAMA_CPP_VERSION = "0.3.36"  # keep in step with scripts/bootstrap and pyproject.toml
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# Persona LoRAs as f16: 9% faster than f32 at 20 players in one lane here (236 vs 217 tok/s),
# half the file, and greedy output still equal to the hf engine's (tests/test_engine_llamacpp.py).
LORA_OUTTYPE = "f16"
TOOLS_ENV = "COMPANION_LLAMA_CPP_TOOLS"


def llama_cpp_tools_dir(cache_dir: Path) -> Path:
    """Where llama.cpp's converters were unpacked ($COMPANION_LLAMA_CPP_TOOLS overrides).

    Raises:
        ModelNotProvisionedError: the converters are not there.
    """
    configured = os.environ.get(TOOLS_ENV)
    tools = Path(configured) if configured else cache_dir / "llama.cpp" / LLAMA_CPP_VERSION
    if not (tools / "convert_hf_to_gguf.py").is_file() or not (tools / "gguf-py").is_dir():
        raise ModelNotProvisionedError(
            f"llama.cpp's GGUF converters are not in {tools}. scripts/bootstrap unpacks them from the "
            f"llama-cpp-python=={LLAMA_CPP_VERSION} source distribution; run it (or set {TOOLS_ENV} to a "
            "llama.cpp checkout that holds convert_hf_to_gguf.py and gguf-py/)."
        )
    return tools


def gguf_path(gguf_dir: Path, checkpoint_name: str, outtype: str) -> Path:
    return gguf_dir / f"{checkpoint_name}.{outtype}.gguf"


def export_checkpoint(checkpoint: Path, out: Path, *, outtype: str, tools: Path) -> Path:
    """Converts a transformers checkpoint directory into one GGUF file.

    Args:
        checkpoint: a directory with config.json, safetensors weights and tokenizer files.
        out: the GGUF file to write.
        outtype: f32, f16, bf16 or q8_0.
        tools: llama.cpp's converters (`llama_cpp_tools_dir`).

    Raises:
        ModelLoadFailedError: the converter rejected the checkpoint; its last output lines say why.
    """
    if outtype not in OUTTYPES:
        raise ModelLoadFailedError(f"GGUF type {outtype!r} is not one of {', '.join(OUTTYPES)}.")
    if not (checkpoint / "config.json").is_file():
        raise ModelLoadFailedError(
            f"{checkpoint} holds no config.json; export-gguf takes a transformers checkpoint directory."
        )
    args = [str(checkpoint), "--outtype", outtype]
    _convert(tools, "convert_hf_to_gguf.py", args, out, what=f"checkpoint {checkpoint}")
    return out


def export_adapter(adapter_dir: Path, base_checkpoint: Path, out_dir: Path, *, tools: Path) -> Path:
    """Converts a peft LoRA adapter into a GGUF LoRA for the base model, once per weights file.

    Args:
        adapter_dir: what peft's save_pretrained wrote (adapter_config.json + weights).
        base_checkpoint: the transformers checkpoint the adapter was trained on (only its
            config is read).
        out_dir: where converted adapters are cached.

    Returns:
        The GGUF file (an existing one when the weights were converted before).

    Raises:
        AdapterError: the directory holds no adapter, or the converter rejected it.
    """
    if not holds_adapter(adapter_dir, weights=True):
        raise AdapterError(
            f"{adapter_dir} holds no peft adapter (adapter_config.json + adapter_model.safetensors)."
        )
    digest = hashlib.sha256((adapter_dir / ADAPTER_WEIGHTS).read_bytes()).hexdigest()[:16]
    out = out_dir / f"{adapter_dir.name}-{digest}.{LORA_OUTTYPE}.gguf"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["--base", str(base_checkpoint), "--outtype", LORA_OUTTYPE, str(adapter_dir)]
    try:
        _convert(tools, "convert_lora_to_gguf.py", args, out, what=f"adapter {adapter_dir}")
    except ModelLoadFailedError as e:
        raise AdapterError(str(e)) from e
    return out


def _convert(tools: Path, script: str, args: list[str], out: Path, *, what: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".partial")
    staging.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tools / "gguf-py"), str(tools)]),
        "HF_HUB_OFFLINE": "1",  # the converters may look a tokenizer up; never on the network
        "NO_LOCAL_GGUF": "",
    }
    log.info("converting %s to %s", what, out.name)
    proc = subprocess.run(
        [sys.executable, str(tools / script), *args, "--outfile", str(staging)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not staging.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        staging.unlink(missing_ok=True)
        raise ModelLoadFailedError(f"llama.cpp's {script} could not convert {what}:\n{tail}")
    staging.rename(out)
