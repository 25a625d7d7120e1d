"""The terminal chat loop behind `companion chat`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from companion.backbone import BackboneConfig, GenerationParams, HFBackbone, RoutingStats
from companion.backbone.streaming import GenerationSummary
from companion.prompting import build_messages
from persona_adapters import get_persona

QUIT = ("/quit", "/exit")


def run_terminal_chat(args: argparse.Namespace, config: BackboneConfig) -> int:
    """Reads player lines from stdin and streams the persona's replies to stdout until EOF or /quit."""
    persona = get_persona(args.persona)  # fail on a bad id before loading a model
    params = GenerationParams(max_new_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    interactive = sys.stdin.isatty()
    started = time.perf_counter()
    backbone = HFBackbone.from_config(config)
    _status(
        f"[{persona.name} on {backbone.info()['architecture']}, loaded in {time.perf_counter() - started:.1f} s]"
    )
    history: list[dict[str, str]] = []
    if persona.first_message:
        print(f"{persona.name}: {persona.first_message}", flush=True)
        history.append({"role": "assistant", "content": persona.first_message})
    try:
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line or line.strip() in QUIT:
                break
            text = line.strip()
            if not text:
                continue
            reply = asyncio.run(
                _reply(backbone, build_messages(persona, history, text), persona.name, params, args)
            )
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
    finally:
        backbone.close()
    return 0


async def _reply(backbone: HFBackbone, messages, name: str, params: GenerationParams, args) -> str:
    summary, routing = GenerationSummary(), RoutingStats()
    print(f"{name}: ", end="", flush=True)
    pieces = []
    async for delta in backbone.stream(messages, params=params, summary=summary, routing_stats=routing):
        pieces.append(delta)
        print(delta, end="", flush=True)
    print(flush=True)
    if args.stats:
        rate = summary.n_generated_tokens / summary.seconds if summary.seconds else 0.0
        experts = f", {routing.overall_mean():.2f} experts/token" if backbone.is_moe else ""
        _status(f"[{summary.n_generated_tokens} tokens, {rate:.1f} tok/s, {summary.finish_reason}{experts}]")
    return "".join(pieces).strip()


def _status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
