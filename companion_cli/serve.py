"""`companion serve`: the server with the web demo (also `companion-server`, an alias).

Example: companion serve        (web demo on http://127.0.0.1:8000, everything in-process)

For production:
    COMPANION_API_KEYS=studio:$(openssl rand -hex 16) REDIS_URL=redis://localhost:6379/0 \\
        companion serve --host 0.0.0.0 --port 8000 --no-demo

Every setting also reads from the environment (server/settings.py); a flag given here wins.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

EXIT_BAD_SETTING = 2


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the server (WebSocket, REST, OpenAI-compatible API, web demo)",
        description=__doc__.split("\n")[0],
        epilog="Example:" + __doc__.split("Example:")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_serve_arguments(parser)


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (COMPANION_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (COMPANION_PORT; default 8000)")
    parser.add_argument("--model", help="'default' or a local checkpoint directory (COMPANION_MODEL)")
    parser.add_argument("--no-demo", action="store_true", help="do not serve the web demo at /")
    parser.add_argument("--log-level", default="info")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from server.errors import ServerError
    from server.run import serve
    from server.settings import ServerSettings

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "model": args.model}.items() if v}
    if args.no_demo:
        overrides["demo"] = False
    try:
        settings = ServerSettings(**overrides)
    except (ValidationError, ServerError) as e:
        sys.stderr.write(f"companion serve: bad setting: {e}\n")
        return EXIT_BAD_SETTING
    return serve(settings, args.log_level)


def main(argv: Sequence[str] | None = None) -> int:
    """`companion-server [ARGS]`, the same as `companion serve [ARGS]`."""
    from companion_cli.main import main as companion

    if argv is None:  # run as a program: restart once with heap scrubbing, as `companion` does
        from memory.heap_hygiene import reexec_with_heap_scrubbing

        reexec_with_heap_scrubbing()
        argv = sys.argv[1:]
    return companion(["serve", *argv])
