"""Serves the app with uvicorn: what `companion serve` runs once its settings are read."""

from __future__ import annotations

import logging
import sys

import uvicorn

from companion.errors import CompanionError
from server.app import create_app
from server.errors import ServerError
from server.handshake import with_handshake_timeout
from server.protocol import TRANSPORT_MAX_BYTES
from server.settings import ServerSettings

log = logging.getLogger(__name__)


def serve(settings: ServerSettings, log_level: str = "info") -> int:
    """Runs until SIGINT/SIGTERM; 0 after a clean stop, 1 if the server could not start.

    The WebSocket frame limit and the handshake timeout are set here, below the app, because
    uvicorn enforces them before a request reaches FastAPI.
    """
    app = create_app(settings)
    if settings.demo:
        shown = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
        sys.stderr.write(
            f"companion serve: web demo at http://{shown}:{settings.port}/ once the model is loaded\n"
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        ws_max_size=TRANSPORT_MAX_BYTES,
        lifespan="on",
        http=with_handshake_timeout(settings.handshake_timeout_s),
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except (CompanionError, ServerError) as e:
        sys.stderr.write(f"companion serve: could not start: {e}\n")
        return 1
    return 0 if server.started else 1
