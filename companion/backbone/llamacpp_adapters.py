"""Persona LoRA adapters for the llamacpp engine: peft directories converted to GGUF once, then loaded.

A persona's adapter is trained with peft on the transformers checkpoint (training/); the
llamacpp engine converts it with llama.cpp's `convert_lora_to_gguf.py` into a GGUF LoRA,
cached by the hash of its weights, and loads that. A `.gguf` path is loaded as it is.
"""

from __future__ import annotations

import threading
from pathlib import Path

from companion.errors import AdapterError


class LlamaCppAdapters:
    """The adapters loaded on one llama.cpp model, by name (the `AdapterRegistry` protocol).

    Args:
        model: the llama.cpp model handle.
        base_checkpoint: the transformers checkpoint the GGUF was exported from; peft
            adapters are converted against its config. None: only `.gguf` adapters load.
        cache_dir: the cache root (converted adapters live in `adapters-gguf/`).
    """

    def __init__(self, model, base_checkpoint: Path | None, cache_dir: Path):
        import llama_cpp as ll

        self._ll = ll
        self._model = model
        self.base_checkpoint = base_checkpoint
        self.cache_dir = cache_dir
        self._handles: dict[str, object] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Loaded adapter names, in load order."""
        return list(self._handles)

    def has(self, name: str) -> bool:
        return name in self._handles

    def check(self, name: str | None) -> None:
        """Raises AdapterError unless `name` is None or a loaded adapter."""
        if name is not None and name not in self._handles:
            loaded = ", ".join(self._handles) or "none"
            raise AdapterError(f"adapter {name!r} is not loaded (loaded: {loaded}); load it first.")

    def handle(self, name: str):
        return self._handles[name]

    def gguf_for(self, path: str | Path) -> Path:
        """The GGUF LoRA for `path`: the file itself, or a peft directory converted (and cached) once.

        Raises:
            AdapterError: no adapter there, or no base checkpoint to convert against.
        """
        from companion.backbone.gguf_export import export_adapter, llama_cpp_tools_dir

        path = Path(path)
        if path.suffix == ".gguf" and path.is_file():
            return path
        if self.base_checkpoint is None:
            raise AdapterError(
                f"{path} is a peft adapter, and this GGUF model has no transformers checkpoint to convert it "
                "against; convert it with llama.cpp's convert_lora_to_gguf.py and load the .gguf file, or set "
                "base_checkpoint in the llamacpp engine's config."
            )
        return export_adapter(
            path,
            self.base_checkpoint,
            self.cache_dir / "adapters-gguf",
            tools=llama_cpp_tools_dir(self.cache_dir),
        )

    def load(self, name: str, path: str | Path) -> None:
        """Loads the adapter at `path` (peft directory or GGUF LoRA) under `name`.

        Raises:
            AdapterError: the name is taken, or the file does not fit this model.
        """
        if name in self._handles:
            raise AdapterError(
                f"an adapter named {name!r} is already loaded; unload it first or pick another name."
            )
        gguf = self.gguf_for(path)
        with self._lock:
            handle = self._ll.llama_adapter_lora_init(self._model, str(gguf).encode())
            if not handle:
                raise AdapterError(
                    f"llama.cpp could not load the LoRA {gguf}: it was made for another model "
                    "(retrain it for this backbone with `companion persona train`)."
                )
            self._handles[name] = handle

    def unload(self, name: str) -> None:
        """Forgets adapter `name`; llama.cpp frees it with the model (requests may still hold it)."""
        self.check(name)
        with self._lock:
            del self._handles[name]

    def free_all(self) -> None:
        with self._lock:
            self._handles.clear()  # llama_model_free releases the adapters' buffers
