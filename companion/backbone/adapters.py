"""Per-persona LoRA adapters on one shared backbone (peft).

Adapters go on attention projections, which are plain Linear layers in every MoE family;
peft can then mix personas in one batch (`adapter_names=[...]`, one per row). Routed
experts are fused 3D parameters that peft's mixed-batch path cannot reach, so expert
LoRA is train-then-merge (see training/).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from companion.errors import AdapterError

BASE = "__base__"  # peft's name for "no adapter" inside a mixed batch
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj", "o_proj")
ADAPTER_CONFIG = "adapter_config.json"  # what peft's save_pretrained writes
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def holds_adapter(path: str | Path, *, weights: bool = False) -> bool:
    """Whether `path` is a peft adapter folder: its config, and with `weights` its safetensors too."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and (not weights or (path / ADAPTER_WEIGHTS).is_file())


class AdapterSet:
    """The adapters loaded on one model, by name.

    The model is wrapped in a peft `PeftModel` when the first adapter arrives and
    unwrapped when the last one leaves, so a backbone without personas pays nothing.
    """

    def __init__(self, model) -> None:
        self.base_model = model
        self._peft = None

    @property
    def model(self):
        return self._peft if self._peft is not None else self.base_model

    @property
    def device(self):
        return next(self.base_model.parameters()).device

    def names(self) -> list[str]:
        """Loaded adapter names, in load order."""
        return list(self._peft.peft_config) if self._peft is not None else []

    def has(self, name: str) -> bool:
        return name in self.names()

    def check(self, name: str | None) -> None:
        """Raises AdapterError unless `name` is None or a loaded adapter."""
        if name is not None and name not in self.names():
            loaded = ", ".join(self.names()) or "none"
            raise AdapterError(f"adapter {name!r} is not loaded (loaded: {loaded}); load it first.")

    def load(self, name: str, path: str | Path) -> None:
        """Loads a saved peft LoRA adapter from `path` under `name`.

        Raises:
            AdapterError: the name is taken, the path holds no adapter, or it does not fit
                this model.
        """
        from peft import PeftModel

        path = Path(path)
        if name in self.names():
            raise AdapterError(
                f"an adapter named {name!r} is already loaded; unload it first or pick another name."
            )
        if not holds_adapter(path):
            raise AdapterError(
                f"{path} holds no adapter_config.json; an adapter directory is what peft's save_pretrained writes."
            )
        self._check_fits(path)  # before peft touches the model: a failed load would leave layers behind
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self.base_model, path, adapter_name=name, is_trainable=False
                )
            else:
                self._peft.load_adapter(path, adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as e:
            if self._peft is not None and name in self._peft.peft_config:
                self._peft.delete_adapter(name)  # leave no half-loaded adapter behind
            raise AdapterError(f"adapter {path} does not fit this backbone: {e}") from e
        self._peft.eval()

    def _check_fits(self, path: Path) -> None:
        """Raises AdapterError unless every LoRA matrix in `path` fits a module of the base model."""
        from safetensors import safe_open

        weights = path / ADAPTER_WEIGHTS
        if not weights.is_file():
            return  # other formats (.bin) are checked by peft itself
        modules = dict(self.base_model.named_modules())
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                if ".lora_A." not in key and ".lora_B." not in key:
                    continue
                module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
                module = modules.get(module_name)
                shape = f.get_slice(key).get_shape()
                if module is None or not hasattr(module, "in_features"):
                    raise AdapterError(
                        f"adapter {path} targets {module_name}, which this backbone does not have."
                    )
                expected = module.in_features if ".lora_A." in key else module.out_features
                got = shape[1] if ".lora_A." in key else shape[0]
                if got != expected:
                    raise AdapterError(
                        f"adapter {path} was trained for another backbone: {module_name} is {expected}-wide here, "
                        f"{got}-wide in the adapter. Retrain it for this model (companion persona train)."
                    )

    def add(self, name: str, lora_config: Any) -> None:
        """Adds a fresh adapter from a peft `LoraConfig` (for training, or tests)."""
        from peft import get_peft_model

        if name in self.names():
            raise AdapterError(f"an adapter named {name!r} is already loaded.")
        if self._peft is None:
            self._peft = get_peft_model(self.base_model, lora_config, adapter_name=name)
        else:
            self._peft.add_adapter(name, lora_config)
        self._peft.eval()

    def unload(self, name: str) -> None:
        """Removes adapter `name`; the base weights are left exactly as they were."""
        self.check(name)
        if name == BASE:
            raise AdapterError(f"{BASE!r} is peft's name for the bare backbone and cannot be unloaded.")
        if len(self.names()) == 1:
            self.base_model = self._peft.unload()  # strips the LoRA layers, merges nothing
            self._peft = None
        else:
            self._peft.delete_adapter(name)

    def save(self, name: str, path: str | Path) -> None:
        """Saves adapter `name` to `path` (peft format)."""
        self.check(name)
        self._peft.save_pretrained(str(path), selected_adapters=[name])

    def generate_kwargs(self, names: Sequence[str | None]) -> dict[str, Any]:
        """`adapter_names` for a batch, one per row; nothing when no adapter is loaded."""
        if self._peft is None:
            return {}
        return {"adapter_names": [n if n is not None else BASE for n in names]}
