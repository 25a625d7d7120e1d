"""Backbone benchmark: load time, prefill and decode speed, peak memory, on this CPU.

Prints one table for the default model: dense SmolLM2-135M-Instruct, the upcycled
4-expert MoE with top-2 routing, and with dynamic top-p routing. Each variant runs in
a fresh child process so that its peak RSS is its own.

    .venv/bin/python benchmarks/bench_backbone.py            # all variants
    .venv/bin/python benchmarks/bench_backbone.py --decode-tokens 32 --prefill-tokens 128

"cold" loads build from the GGUF file in a temporary cache, in a process of their own
(dequantise and save, and for the MoE upcycle and save too); "cached" loads read the
safetensors cache. Peak RSS is that of the process that loads from the cache and
generates.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "dense": {"routing": None},
    "moe-top2": {"routing": {"policy": "top_k", "n_experts_per_token": 2}},
    "moe-top-p0.4": {"routing": {"policy": "top_p", "top_p": 0.4}},
    "moe-top-p0.7": {"routing": {"policy": "top_p", "top_p": 0.7}},
}


def measure_cold(variant: str) -> dict:
    """Builds the variant from the GGUF file in a scratch cache (its own process)."""
    from transformers import AutoModelForCausalLM

    from companion.backbone.provision import (
        build_dense_checkpoint,
        default_model_paths,
        prepare_default_model,
    )

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        if variant == "dense":
            target = default_model_paths(scratch).dense_dir
            build_dense_checkpoint(target)
            AutoModelForCausalLM.from_pretrained(target, local_files_only=True)
        else:
            paths = prepare_default_model(scratch, n_experts=4)
            AutoModelForCausalLM.from_pretrained(paths.moe_dir, local_files_only=True)
        return {"cold_load_s": round(time.perf_counter() - started, 1)}


def measure(variant: str, prefill_tokens: int, decode_tokens: int, repeats: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from companion.backbone import BackboneConfig, HFBackbone, RoutingConfig, RoutingStats
    from companion.backbone.provision import DENSE_NAME, prepare_default_model

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    if variant == "dense":
        paths = prepare_default_model()
        model = AutoModelForCausalLM.from_pretrained(paths.dense_dir, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(paths.dense_dir, local_files_only=True)
        backbone = HFBackbone(model, tokenizer, source=DENSE_NAME)
    else:
        routing = RoutingConfig(**VARIANTS[variant]["routing"])
        backbone = HFBackbone.from_config(BackboneConfig(routing=routing))
    cached = time.perf_counter() - started

    model, tokenizer = backbone.model, backbone.tokenizer
    text = " ".join(
        ["The innkeeper remembered every traveller who had ever stayed at the Copper Kettle."] * 64
    )
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :prefill_tokens]
    stats = RoutingStats()
    for router in backbone.routers:
        router.stats = stats
    prefill, decode = [], []
    with torch.no_grad():
        model(ids[:, :16])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(ids)
            prefill.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.generate(
                ids[:, :32],
                max_new_tokens=decode_tokens,
                min_new_tokens=decode_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            decode.append(time.perf_counter() - t0)
    # generate() includes a 32-token prefill; subtract its share to isolate decoding.
    prefill_rate = prefill_tokens / statistics.median(prefill)
    decode_seconds = statistics.median(decode) - 32 / prefill_rate
    return {
        "variant": variant,
        "cached_load_s": round(cached, 2),
        "prefill_tok_s": round(prefill_rate, 1),
        "decode_tok_s": round(decode_tokens / decode_seconds, 1),
        "experts_per_token": round(stats.overall_mean(), 2) if backbone.routers else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="measure one variant (internal)")
    parser.add_argument("--cold", action="store_true", help="with --variant: time the cold build (internal)")
    parser.add_argument("--prefill-tokens", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if args.variant:
        if args.cold:
            result = measure_cold(args.variant)
        else:
            result = measure(args.variant, args.prefill_tokens, args.decode_tokens, args.repeats)
        print(json.dumps(result))
        return
    rows = []
    cold_builds = {"dense": "dense", "moe": "moe-top2"}  # routing does not change the build
    cold = {kind: _child([variant, "--cold"]) for kind, variant in cold_builds.items()}
    for variant in VARIANTS:
        row = _child([variant, *_speed_args(args)])
        row["cold_load_s"] = cold["dense" if variant == "dense" else "moe"]["cold_load_s"]
        rows.append(row)
        print(f"measured {variant}", file=sys.stderr, flush=True)
    print(
        f"SmolLM2-135M-Instruct on {os.cpu_count()} CPU threads, fp32; prefill {args.prefill_tokens} tokens, "
        f"decode {args.decode_tokens} tokens greedy, median of {args.repeats}"
    )
    columns = [
        "variant",
        "parameters_m",
        "cold_load_s",
        "cached_load_s",
        "prefill_tok_s",
        "decode_tok_s",
        "experts_per_token",
        "peak_rss_mb",
    ]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _speed_args(args: argparse.Namespace) -> list[str]:
    return [
        "--prefill-tokens", str(args.prefill_tokens),
        "--decode-tokens", str(args.decode_tokens),
        "--repeats", str(args.repeats),
    ]  # fmt: skip


def _child(extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--variant", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
