"""The Companion server: WebSocket protocol v1, REST, OpenAI chat completions, Redis-backed
sessions, the web demo.

`create_app(settings)` builds the FastAPI app; `companion serve` (companion_cli/serve.py, then `server/run.py`)
runs it with uvicorn. Both names load lazily, so a game-side client importing only
`server.client` (and `server.protocol`) does not load torch, Chroma or FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.app import create_app
    from server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from server.app import create_app

        return create_app
    if name == "ServerSettings":
        from server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'server' has no attribute {name!r}")
