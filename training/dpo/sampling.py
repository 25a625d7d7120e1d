"""Replies sampled from the base model with an adapter active, for on-policy DPO's rounds:
all at once through the `llamacpp` engine (continuous batching; the adapter is converted to
GGUF once) or batched transformers generation (`hf`).

The llamacpp engine samples in a child process of its own. torch and llama.cpp share one
libgomp in this process; once torch has run with two threads (a DPO round, the judges),
libgomp counts more threads than cores and stops spinning between llama.cpp's steps, which
made sampling about 1.5x slower (16 replies of 48 tokens through a LoRA: 3.3 s in a fresh
process, 5.1 s after a torch matmul; 2 cores). A child also turns a crash in llama.cpp into
an error that says so, not a dead training run.

`config` below is an `OnPolicyConfig` (training.dpo.on_policy), or anything with its sampling
fields: samples, greedy, loop_probe, temperature, top_p, max_new_tokens, engine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path


def sample_replies(
    config, model_dir: Path, adapter: Path, prompts: list[list[dict]], seed: int
) -> list[list[str]]:
    """`config.samples` replies to each prompt from the base model with `adapter` active
    (with `config.greedy`, each prompt's first reply is the greedy one; with
    `config.loop_probe`, one more, greedy without a repetition penalty, comes last)."""
    n = config.samples + config.loop_probe
    params = [sampling_params(config, i % n, seed + i) for i in range(len(prompts) * n)]
    flat = [p for p in prompts for _ in range(n)]
    if config.engine == "llamacpp":
        replies = _sample_llamacpp(model_dir, adapter, flat, params)
    else:
        replies = _sample_hf(model_dir, adapter, flat, params)
    return [[r.strip() for r in replies[i * n : (i + 1) * n]] for i in range(len(prompts))]


def sampling_params(config, index: int, seed: int):
    """How a context's `index`-th reply is decoded."""
    from companion.backbone import GenerationParams

    if config.loop_probe and index == config.samples:
        return GenerationParams(max_new_tokens=config.max_new_tokens, temperature=0.0, repetition_penalty=1.0)
    greedy = config.greedy and index == 0
    return GenerationParams(max_new_tokens=config.max_new_tokens, temperature=0.0 if greedy else config.temperature,
                            top_p=config.top_p, seed=seed)  # fmt: skip


def _sample_llamacpp(model_dir: Path, adapter: Path, prompts, params) -> list[str]:
    """`_sample_llamacpp_here` in a fresh child process (see the module's note)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_sample_llamacpp_here, model_dir, adapter, prompts, params).result()
        except BrokenProcessPool as e:
            raise RuntimeError(
                "the llama.cpp sampling process died (a crash inside llama.cpp, or out of memory); "
                "set `engine: hf` in the on-policy config to sample with transformers instead"
            ) from e


def _sample_llamacpp_here(model_dir: Path, adapter: Path, prompts, params) -> list[str]:
    from companion.backbone.llamacpp_config import LlamaCppConfig
    from companion.backbone.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine.from_config(
        LlamaCppConfig(n_lanes=1, n_slots_per_lane=16, n_ctx_per_slot=1024, base_checkpoint=str(model_dir))
    )
    try:
        engine.adapters.load("policy", adapter)

        async def every() -> list[str]:
            return await asyncio.gather(
                *(
                    engine.generate(p, adapter="policy", params=q)
                    for p, q in zip(prompts, params, strict=True)
                )
            )

        return asyncio.run(every())
    finally:
        engine.close()


def _sample_hf(model_dir: Path, adapter: Path, prompts, params, batch: int = 8) -> list[str]:
    from companion.backbone import BackboneConfig, HFBackbone

    backbone = HFBackbone.from_config(BackboneConfig(model=str(model_dir)))
    try:
        backbone.adapters.load("policy", adapter)
        replies: list[str] = [""] * len(prompts)

        def kind(q) -> tuple[bool, float]:  # a batch shares its decoding settings
            return q.temperature == 0, q.repetition_penalty

        for shared in sorted({kind(q) for q in params}):
            group = [i for i, q in enumerate(params) if kind(q) == shared]
            for start in range(0, len(group), batch):
                chunk = group[start : start + batch]
                done = backbone.generate_batch([prompts[i] for i in chunk], adapters=["policy"] * len(chunk),
                                               params=params[chunk[0]])  # fmt: skip
                for i, reply in zip(chunk, done, strict=True):
                    replies[i] = reply
        return replies
    finally:
        backbone.close()
