"""`companion chat`: talk to a persona in the terminal through the full turn pipeline, memories on disk."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from companion.backbone.config import REPLY_MAX_NEW_TOKENS
from companion_cli.models import add_model_arguments, load_engine

if TYPE_CHECKING:
    from companion.assembly import Companion
    from companion.protocols import Generator

QUIT = ("/quit", "/exit")


def add_chat_command(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser(
        "chat",
        help="talk to a persona in the terminal, replies streamed",
        description="Talk to a persona in the terminal through the full turn pipeline (memory, reflection). "
        "Type a line and press Enter; /quit or Ctrl-D ends. Memories persist in the data directory.",
        epilog="Example: companion chat --persona mira --player p1 --meta",
    )
    chat.add_argument("--persona", default="mira", help="persona id (default: mira)")
    add_model_arguments(chat)
    chat.add_argument(
        "--max-tokens",
        type=int,
        default=REPLY_MAX_NEW_TOKENS,
        help=f"longest reply in tokens (default: {REPLY_MAX_NEW_TOKENS})",
    )
    chat.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily (default: 0.7)")
    chat.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    chat.add_argument(
        "--stats", action="store_true", help="print tokens/s and reflection time after each reply"
    )
    chat.add_argument(
        "--meta", action="store_true", help="print each reply's metadata (strategy, emotion, memories)"
    )
    chat.add_argument(
        "--player", default="local-player", help="whose memories to use (default: local-player)"
    )
    chat.add_argument("--data-dir", default=None, help="data directory (default: $COMPANION_DATA_DIR)")
    chat.set_defaults(handler=_run_chat)


def _run_chat(args: argparse.Namespace) -> int:
    return run_terminal_chat(args, lambda: load_engine(args))


def run_terminal_chat(args: argparse.Namespace, load_engine: Callable[[], Generator]) -> int:
    """Reads player lines from stdin and streams the persona's replies to stdout until EOF or /quit.

    Args:
        args: the chat subcommand's arguments.
        load_engine: loads the engine; called once the persona id is known to be good.
    """
    return asyncio.run(_chat(args, load_engine))


async def _chat(args: argparse.Namespace, load_engine: Callable[[], Generator]) -> int:
    from companion.assembly import Companion
    from companion.backbone import GenerationParams
    from companion.paths import default_data_dir
    from persona_adapters import PersonaRegistry

    data_dir = args.data_dir or default_data_dir()
    persona = PersonaRegistry.default(data_dir).get(args.persona)  # fail on a bad id before loading a model
    params = GenerationParams(max_new_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    started = time.perf_counter()
    companion = Companion.build(data_dir=data_dir, params=params, backbone=load_engine())
    known = await companion.store.list(player_id=args.player, npc_id=persona.id, include_superseded=False)
    _status(
        f"[{persona.name} on {companion.backbone.info()['architecture']} ({companion.backbone.kind}), loaded in "
        f"{time.perf_counter() - started:.1f} s; {len(known)} memories of {args.player}]"
    )
    if persona.first_message:
        print(f"{persona.name}: {persona.first_message}", flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            if sys.stdin.isatty():
                print("you> ", end="", flush=True)
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() in QUIT:
                break
            if line.strip():
                await _reply(companion, persona.name, line.strip(), args)
    finally:
        await companion.close()
    return 0


async def _reply(companion: Companion, name: str, text: str, args: argparse.Namespace) -> None:
    print(f"{name}: ", end="", flush=True)
    streamed = ""
    async for event in companion.pipeline.turn(player_id=args.player, npc_id=args.persona, text=text):
        if event.kind == "token":
            streamed += event.text
            print(event.text, end="", flush=True)
        elif event.kind == "restart":
            print(flush=True)
            _status(f"[draft rejected, regenerating: {event.text}]")
            print(f"{name}: ", end="", flush=True)
            streamed = ""
        else:
            print(flush=True)
            result = event.result
            if result.text != streamed.strip():  # reflection's fallbacks changed what was streamed
                _status(f"[reply revised: {', '.join(result.fallbacks)}]")
                print(f"{name}: {result.text}", flush=True)
            if args.meta:
                _status("[" + json.dumps(result.metadata()) + "]")
            if args.stats:
                g = result.generation
                rate = g.n_generated_tokens / g.seconds if g.seconds else 0.0
                experts = (
                    f", {result.routing.overall_mean():.2f} experts/token" if result.routing.tokens else ""
                )
                _status(
                    f"[{g.n_generated_tokens} tokens, {rate:.1f} tok/s, {g.finish_reason}{experts}; "
                    f"reflection {result.reflection_ms:.0f} ms]"
                )


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
