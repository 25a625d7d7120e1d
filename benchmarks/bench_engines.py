"""Engines side by side (not a test): time to first token and decode speed, one run, one machine.

Runs the same ~300-token persona prompt, greedy, 64 new tokens (end of sequence banned),
through the `hf` engine (transformers, the MoE checkpoint), the `llamacpp` engine and raw
llama-cpp-python (its high-level `Llama`) on the same GGUF file. Every repetition starts
with a new first line, so nothing is served from a prefix cache and each engine prefills
the whole prompt. Prints the median of --reps for each, then the llamacpp engine with N
players at once (continuous batching; N prompts that differ only in the player's line,
so the persona prompt is shared as in a game).

    .venv/bin/python benchmarks/bench_engines.py
    .venv/bin/python benchmarks/bench_engines.py --gguf-type f16 --no-collapse --players 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from companion.backbone import BackboneConfig, GenerationParams, HFBackbone  # noqa: E402
from companion.backbone.llamacpp_config import LlamaCppConfig, resolve_gguf  # noqa: E402
from companion.backbone.llamacpp_engine import LlamaCppEngine  # noqa: E402
from companion.backbone.streaming import GenerationSummary  # noqa: E402
from companion.prompting import build_messages  # noqa: E402
from persona_adapters import PersonaRegistry  # noqa: E402

N_NEW = 64
PARAMS = GenerationParams(max_new_tokens=N_NEW, min_new_tokens=N_NEW, temperature=0.0, repetition_penalty=1.0)


def prompt(rep: int) -> list[dict[str, str]]:
    persona = PersonaRegistry.default().get("mira")
    messages = build_messages(
        persona, [], f"Evening {rep}! I've walked all day. What's good tonight, and is there a bed?"
    )
    messages[0] = {
        **messages[0],
        "content": f"[Night {rep}.] " + messages[0]["content"],
    }  # defeats prefix caches
    return messages


def bench_engine(engine, reps: int) -> tuple[float, float]:
    ttfts, rates = [], []
    for rep in range(reps):
        summary = GenerationSummary()
        started = time.perf_counter()
        asyncio.run(engine.generate(prompt(rep), params=PARAMS, summary=summary))
        total = time.perf_counter() - started
        ttfts.append(summary.time_to_first_token)
        rates.append((summary.n_generated_tokens - 1) / (total - summary.time_to_first_token))
    return statistics.median(ttfts), statistics.median(rates)


def bench_raw(gguf: Path, prompts: list[list[int]], threads: int) -> tuple[float, float]:
    """Each of `prompts` (token ids, rendered by the engine) through llama-cpp-python's `Llama`."""
    import llama_cpp.llama_cpp as ll
    from llama_cpp import Llama

    # load as the engine does, without extra CPU buffer types (they crash on CPUs with AMX)
    default_params = ll.llama_model_default_params

    def engine_params():
        params = default_params()
        params.use_extra_bufts = False
        return params

    ll.llama_model_default_params = engine_params
    try:
        llm = Llama(model_path=str(gguf), n_ctx=1024, n_batch=512, n_threads=threads, verbose=False)
    finally:
        ll.llama_model_default_params = default_params
    eos = llm.token_eos()
    ttfts, rates = [], []
    for tokens in prompts:
        llm.reset()
        started, first, n = time.perf_counter(), None, 0
        for _ in llm.create_completion(
            tokens, max_tokens=N_NEW, temperature=0.0, stream=True, logit_bias={eos: -1e9}
        ):
            first = first or time.perf_counter()
            n += 1
        end = time.perf_counter()
        ttfts.append(first - started)
        rates.append((n - 1) / (end - first))
    return statistics.median(ttfts), statistics.median(rates)


def bench_players(engine: LlamaCppEngine, players: int) -> tuple[float, float, float]:
    params = GenerationParams(max_new_tokens=32, min_new_tokens=32, temperature=0.7, seed=1)
    persona = PersonaRegistry.default().get("mira")

    async def run():
        summaries = [GenerationSummary() for _ in range(players)]
        started = time.perf_counter()
        await asyncio.gather(
            *[
                engine.generate(
                    build_messages(persona, [], f"I'm player {i}. What's good tonight?"),
                    params=params,
                    summary=s,
                )
                for i, s in enumerate(summaries)
            ]
        )
        wall = time.perf_counter() - started
        ttft = sorted(s.time_to_first_token for s in summaries)
        return ttft[len(ttft) // 2], ttft[-1], sum(s.n_generated_tokens for s in summaries) / wall

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf-type", default="q8_0", choices=("q8_0", "f16", "f32"))
    parser.add_argument(
        "--no-collapse", action="store_true", help="serve the MoE GGUF even with identical experts"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--players", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args()

    config = LlamaCppConfig(
        gguf_type=args.gguf_type,
        collapse_identical_experts=not args.no_collapse,
        n_threads=args.threads,
        n_lanes=1,
        n_slots_per_lane=max(args.players, 1),
    )
    gguf, _ = resolve_gguf(config)
    print(
        f"prompt ~{len(LlamaCppEngine.from_config(config).render_prompt(prompt(0), max_new_tokens=1))} "
        f"tokens, {N_NEW} new tokens, greedy, median of {args.reps}; GGUF {gguf.name}; {args.threads} threads"
    )
    # Order matters: torch and llama.cpp share one libgomp, and a thread that has run a parallel
    # region keeps its worker threads; with more of them than cores libgomp stops spinning
    # between steps and whatever decodes next runs ~2.6x slower. So the engine (its own
    # scheduler thread) runs first and is closed, then raw llama.cpp and hf in this thread.
    engine = LlamaCppEngine.from_config(config)
    rows = [("llamacpp engine", *bench_engine(engine, args.reps))]
    players = bench_players(engine, args.players) if args.players > 1 else None
    raw_prompts = [engine.render_prompt(prompt(100 + rep), max_new_tokens=N_NEW) for rep in range(args.reps)]
    engine.close()
    rows.append(("raw llama-cpp-python Llama", *bench_raw(gguf, raw_prompts, args.threads)))
    if not args.skip_hf:
        import torch

        torch.set_num_threads(args.threads)
        hf = HFBackbone.from_config(BackboneConfig())
        rows.insert(0, ("hf (transformers, MoE safetensors)", *bench_engine(hf, args.reps)))
        hf.close()
    print(f"{'engine':<38}{'TTFT ms':>10}{'decode tok/s':>15}")
    for name, ttft, rate in rows:
        print(f"{name:<38}{1000 * ttft:>10.0f}{rate:>15.1f}")
    ours, raw = rows[-2][2], rows[-1][2]
    print(f"llamacpp engine / raw llama.cpp decode: {ours / raw:.2f}x")
    if players:
        p50, worst, aggregate = players
        print(
            f"llamacpp engine, {args.players} players at once (one persona, 32 tokens each): "
            f"TTFT p50 {1000 * p50:.0f} ms, max {1000 * worst:.0f} ms, aggregate {aggregate:.1f} tok/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
