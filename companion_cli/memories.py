"""`companion memory ...`: look into, search, export and forget a player's memories."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime

from companion.paths import default_data_dir


def add_memory_commands(sub: argparse._SubParsersAction) -> None:
    memory = sub.add_parser(
        "memory",
        help="list, search, export, remember and forget a player's memories",
        description="Inspect and manage the memory events an NPC holds about a player.",
        epilog="Example: companion memory list --player p1 --npc mira",
    )
    commands = memory.add_subparsers(title="memory commands", metavar="COMMAND")
    specs = [
        ("list", _list, "list the events about a player", "companion memory list --player p1 --npc mira --active"),
        ("search", _search, "recall events for a query, with scores",
         "companion memory search --player p1 --npc mira \"I've been craving hotpot\""),
        ("export", _export, "print everything about a player as JSON", "companion memory export --player p1 > p1.json"),
        ("remember", _remember, "summarize a player line into events and store them",
         "companion memory remember --player p1 --npc mira \"I have a really sensitive stomach.\""),
        ("forget", _forget, "hard-delete a player's memories (all, or with one NPC)",
         "companion memory forget --player p1 --npc mira --yes"),
    ]  # fmt: skip
    for name, handler, help_text, example in specs:
        p = commands.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                                epilog=f"Example: {example}")  # fmt: skip
        p.add_argument("--player", required=True, help="player id")
        p.add_argument("--npc", required=name in ("search", "remember"), help="NPC (persona) id")
        p.add_argument("--data-dir", default=None, help="data directory (default: $COMPANION_DATA_DIR)")
        p.add_argument(
            "--chroma-url",
            default=os.environ.get("COMPANION_CHROMA_URL"),
            help="a Chroma server instead of the embedded store (default: $COMPANION_CHROMA_URL, as the server)",
        )
        if name in ("search", "remember"):
            p.add_argument("text", help="the query" if name == "search" else "what the player said")
        if name == "search":
            p.add_argument("-k", type=int, default=5, help="how many events (default: 5)")
        if name == "list":
            p.add_argument("--active", action="store_true", help="hide superseded events")
        if name == "forget":
            p.add_argument("--yes", action="store_true", help="confirm the hard delete")
            p.add_argument("--faded", action="store_true", help="only events the forgetting policy lets fade")
        p.set_defaults(handler=handler)


def open_store(args: argparse.Namespace):
    from memory.embedding import MiniLMEmbedder
    from memory.store import ChromaMemoryStore

    embedder = MiniLMEmbedder()
    if args.chroma_url:
        return ChromaMemoryStore.remote(args.chroma_url, embedder)
    root = args.data_dir or default_data_dir()
    return ChromaMemoryStore.embedded(os.path.join(root, "memory"), embedder)


def _list(args: argparse.Namespace) -> int:
    events = asyncio.run(
        open_store(args).list(player_id=args.player, npc_id=args.npc, include_superseded=not args.active)
    )
    for e in events:
        status = "" if e.active else f"  (superseded by {e.superseded_by[:8]})"
        print(
            f"{e.id[:8]}  {e.npc_id:10s} {e.type:15s} imp {e.importance:2d}  x{e.mention_count}  {e.content}{status}"
        )
    print(f"{len(events)} events", file=sys.stderr)
    return 0


def _search(args: argparse.Namespace) -> int:
    found = asyncio.run(open_store(args).search(args.text, player_id=args.player, npc_id=args.npc, k=args.k))
    for s in found:
        p = s.parts
        print(
            f"{s.score:.3f}  (relevance {p.relevance:.2f}, recency {p.recency:.2f}, importance {p.importance:.1f})  "
            f"{s.event.type:15s} {s.event.content}"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    print(json.dumps(asyncio.run(open_store(args).export(player_id=args.player, npc_id=args.npc)), indent=2))
    return 0


def _remember(args: argparse.Namespace) -> int:
    from memory.events import Turn
    from memory.fast_summarizer import FastSummarizer

    store = open_store(args)
    turn = Turn(role="player", text=args.text, at=datetime.now(UTC))
    drafts = asyncio.run(FastSummarizer(store.embedder).summarize([turn], npc_name=args.npc))
    writes = asyncio.run(store.add(drafts, player_id=args.player, npc_id=args.npc, turns=[turn]))
    for w in writes:
        print(f"{w.action:10s} {w.event.type:15s} {w.event.content}")
    if not writes:
        print("nothing to remember (chit-chat)", file=sys.stderr)
    return 0


def _forget(args: argparse.Namespace) -> int:
    from memory.config import ForgettingPolicy

    store = open_store(args)
    if args.faded:
        gone = asyncio.run(store.forget(player_id=args.player, npc_id=args.npc, policy=ForgettingPolicy()))
        print(f"forgot {len(gone)} faded events")
        return 0
    if not args.yes:
        print("companion: refusing a hard delete without --yes; it cannot be undone.", file=sys.stderr)
        return 2
    n = asyncio.run(store.delete(player_id=args.player, npc_id=args.npc))
    scope = f"with {args.npc}" if args.npc else "with every NPC"
    print(f"deleted {n} events about {args.player} {scope}")
    return 0
