"""The Companion server: WebSocket protocol v1, REST, Redis-backed sessions, the web demo.

`create_app(settings)` builds the FastAPI app; `python -m server` (or `companion-server`)
runs it with uvicorn.
"""

from server.app import create_app
from server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
