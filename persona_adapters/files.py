"""Reading persona and card files that users hand in: bounded, and every failure a named error.

A card from the internet may be anything: a directory, a binary file, a JSON nested
100,000 deep, or 150 MB. Each is refused with one line that says what it is, never a
traceback, and nothing over `MAX_INPUT_BYTES` is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from persona_adapters.errors import PersonaError

MAX_INPUT_BYTES = 20 * 2**20  # a PNG card with its picture is a few MiB; a persona YAML a few KiB


def read_input(path: str | Path, *, what: str, error: type[PersonaError]) -> bytes:
    """The bytes of a file the user named.

    Raises:
        `error`: the path is missing, a directory, unreadable, or larger than MAX_INPUT_BYTES.
    """
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file.")
    if path.is_dir():
        raise error(f"{path} is a directory; give the {what} file itself.")
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise error(
            f"{path} is {size / 2**20:.0f} MiB, larger than the {MAX_INPUT_BYTES / 2**20:.0f} MiB a {what} may be."
        )
    try:
        return path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror}).") from e


def decode_text(raw: bytes, path: str | Path, *, what: str, error: type[PersonaError]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (bad byte at {e.start}); a {what} is a UTF-8 text file.") from e


def parse_json(text: str | bytes, source: str, *, error: type[PersonaError]) -> Any:
    try:
        return json.loads(text)
    except RecursionError as e:
        raise error(f"{source}: the JSON is nested too deeply to read.") from e
    except ValueError as e:  # JSONDecodeError, and numbers over Python's digit limit
        raise error(f"{source}: not valid JSON ({e}).") from e
