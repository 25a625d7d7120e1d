"""Where Companion keeps its data on this machine."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "COMPANION_DATA_DIR"


def default_data_dir() -> Path:
    """$COMPANION_DATA_DIR, or ~/.local/share/companion (memories live in its memory/ folder)."""
    configured = os.environ.get(DATA_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".local" / "share" / "companion"
