"""What every training job shares: where its files are, its command line, its config, its summary.

A job is a module with `main(argv)`, run as `python -m training.<group>.<job>` or through
`companion train <job>`. Its settings are a frozen dataclass with `from_file` (YAML in
`training/configs/`); `--smoke` shrinks them so CI runs every job in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from companion.errors import CompanionError, ConfigError

TRAINING = Path(__file__).resolve().parent
CONFIGS = TRAINING / "configs"
DATA = TRAINING / "data"
"""Material the training sets are built from (templates, the dialogue bank)."""
EVAL_DATA = TRAINING / "evaluation" / "data"
"""Held-out sets that measure a job; nothing is trained on them."""

C = TypeVar("C")


def job_parser(
    doc: str | None, *, config: Path | None = None, smoke: str | None = None
) -> argparse.ArgumentParser:
    """The job's parser: its docstring as help, `--config` (when it has one) and `--smoke`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if config is not None:
        parser.add_argument(
            "--config", type=Path, default=config, help=f"settings (default: {_shown(config)})"
        )
    if smoke is not None:
        parser.add_argument("--smoke", action="store_true", help=smoke)
    return parser


def load_config(cls: type[C], args: argparse.Namespace, **smoke: Any) -> C:
    """The job's settings from `--config`, shrunk by the `smoke` overrides under `--smoke`."""
    config = cls.from_file(args.config)  # type: ignore[attr-defined]
    return replace(config, **smoke) if getattr(args, "smoke", False) and smoke else config


def settings_for(cls: type[C], source: Any, **overrides: Any) -> C:
    """A `cls` settings object from `source`'s fields of the same names, then `overrides`
    (a job that runs another job passes its own settings on)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{n: getattr(source, n) for n in names if hasattr(source, n)} | overrides)


def check(condition: bool, message: str) -> None:
    """Raises ConfigError(message) unless `condition`: settings checks read as one line each."""
    if not condition:
        raise ConfigError(message)


def check_counts(config: Any, *names: str) -> None:
    """Raises ConfigError unless each named field of `config` is >= 1 (steps, batch sizes, ranks)."""
    values = [getattr(config, name) for name in names]
    listed = " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
    check(min(values) >= 1, f"{listed} must be >= 1; got {', '.join(map(str, values))}.")


def print_summary(summary: dict, keys: Iterable[str] | None = None) -> None:
    """The job's result as one JSON line on stdout (what run_all and the tests read)."""
    print(json.dumps(summary if keys is None else {k: summary[k] for k in keys}))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def run(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Runs a job's `main`; a bad setting or missing input ends it with one clear line and exit 1."""
    try:
        main(argv)
    except CompanionError as e:
        print(f"training: error: {e}", file=sys.stderr)
        return 1
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(TRAINING.parent))
    except ValueError:
        return str(path)


def load_persona_adapters(
    backbone, registry, persona_ids: Iterable[str], prefix: str, *, root: Path | None = None, purpose: str
) -> dict[str, str]:
    """Loads each persona's adapter into `backbone` as `prefix-<id>`: `root/<id>`, or without
    `root` the persona's registered (bundled) one. Returns persona id -> loaded name.

    Raises:
        ConfigError: a persona has no adapter there (it says what `purpose` needed it for).
    """
    names = {}
    for pid in persona_ids:
        folder = Path(root) / pid if root else registry.adapter_dir(pid)
        if folder is None or not folder.is_dir():
            raise ConfigError(
                f"persona {pid!r} has no adapter to {purpose} at {folder or 'its persona folder'}; "
                f"train one: companion persona train {pid}"
            )
        names[pid] = f"{prefix}-{pid}"
        backbone.adapters.load(names[pid], folder)
    return names
