"""Config dataclasses read from YAML files: the `from_file` of every config in the project.

Engines (companion/backbone) and training jobs (training/) both read their settings this
way, so an unknown key or a missing file says the same clear thing everywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Self

import yaml

from companion.errors import ConfigError


def dataclass_from_yaml(cls: type, path: str | Path) -> Any:
    """An instance of dataclass `cls` from a YAML mapping of its fields (the `from_file` of every config).

    Raises:
        ConfigError: the file is missing, is not a mapping, or names unknown keys.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist.") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of {cls.__name__} fields.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields.keys())
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown keys {unknown}; {cls.__name__} takes {sorted(fields)}."
        )
    for name, value in data.items():
        _check_type(path, name, value, fields[name].type)
    return cls(**data)


_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _check_type(path: Path, name: str, value: Any, annotation: Any) -> None:
    """ConfigError when a scalar field (int, float, bool, str, or one of them | None) holds
    another kind of value: "5.0# note" is a string to YAML, and should not fail later as a
    TypeError deep in a job."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    optional = kind.endswith(" | None")
    kind = kind.removesuffix(" | None")
    if kind not in _SCALARS or (optional and value is None):
        return
    wanted = _SCALARS[kind]
    if isinstance(value, bool) and bool not in wanted or not isinstance(value, wanted):
        raise ConfigError(
            f"config file {path}: {name} is {value!r}; expected {kind}{' or null' if optional else ''}."
        )


class YamlConfig:
    """Mixin for a config dataclass: `Cls.from_file(path)` reads its fields from YAML."""

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        return dataclass_from_yaml(cls, path)
