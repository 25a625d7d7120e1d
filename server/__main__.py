"""Runs the server: `python -m server` or `companion-server`.

Examples:
    companion-server                          # web demo on http://127.0.0.1:8000, everything in-process
    COMPANION_API_KEYS=studio:$(openssl rand -hex 16) REDIS_URL=redis://localhost:6379/0 \\
        companion-server --host 0.0.0.0 --port 8000 --no-demo
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from pydantic import ValidationError

from companion.errors import CompanionError
from memory.heap_hygiene import reexec_with_heap_scrubbing
from server.app import create_app
from server.errors import ServerError
from server.handshake import with_handshake_timeout
from server.protocol import TRANSPORT_MAX_BYTES
from server.settings import ServerSettings


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program: restart once with heap scrubbing (memory/heap_hygiene.py)
        reexec_with_heap_scrubbing()
    parser = argparse.ArgumentParser(
        prog="companion-server",
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("Examples:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (COMPANION_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (COMPANION_PORT; default 8000)")
    parser.add_argument("--model", help="'default' or a local checkpoint directory (COMPANION_MODEL)")
    parser.add_argument("--no-demo", action="store_true", help="do not serve the web demo at /")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "model": args.model}.items() if v}
    if args.no_demo:
        overrides["demo"] = False
    try:
        settings = ServerSettings(**overrides)
    except (ValidationError, ServerError) as e:
        sys.stderr.write(f"companion-server: bad setting: {e}\n")
        return 2
    app = create_app(settings)
    if settings.demo:
        shown = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
        sys.stderr.write(
            f"companion-server: web demo at http://{shown}:{settings.port}/ once the model is loaded\n"
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        ws_max_size=TRANSPORT_MAX_BYTES,
        lifespan="on",
        http=with_handshake_timeout(settings.handshake_timeout_s),
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except (CompanionError, ServerError) as e:
        sys.stderr.write(f"companion-server: could not start: {e}\n")
        return 1
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
