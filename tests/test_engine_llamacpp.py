"""The llamacpp engine on the real default model: parity with hf, personas at once, cancellation, caching.

The GGUF files come from `companion models prepare` (scripts/bootstrap runs it); greedy
decoding makes every comparison exact.
"""

import asyncio

import pytest

from companion.backbone import BackboneConfig, GenerationParams, HFBackbone
from companion.backbone.llamacpp_config import LlamaCppConfig
from companion.backbone.streaming import GenerationSummary
from companion.errors import AdapterError, ModelLoadFailedError
from companion.prompting import build_messages
from persona_adapters import PersonaRegistry

pytestmark = pytest.mark.slow
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="the llamacpp engine needs llama-cpp-python (scripts/bootstrap)"
)

from companion.backbone.llamacpp_engine import LlamaCppEngine  # noqa: E402

GREEDY = GenerationParams(max_new_tokens=24, temperature=0.0, repetition_penalty=1.0)
PERSONAS = ("mira", "orla", "marlowe")


@pytest.fixture(scope="module")
def registry():
    return PersonaRegistry.default()


@pytest.fixture(scope="module")
def engine(default_paths, registry):
    engine = LlamaCppEngine.from_config(LlamaCppConfig(n_lanes=3, n_slots_per_lane=4))
    for persona in PERSONAS:
        engine.adapters.load(persona, registry.adapter_dir(persona))
    yield engine
    engine.close()


def _messages(registry, persona, line):
    return build_messages(registry.get(persona), [], line)


def test_greedy_output_equals_the_hf_engine_for_64_tokens(default_paths, registry):
    params = GenerationParams(max_new_tokens=64, min_new_tokens=64, temperature=0.0, repetition_penalty=1.0)
    prompt = _messages(registry, "mira", "I have a really sensitive stomach. What's good tonight?")
    hf = HFBackbone.from_config(BackboneConfig())
    exact = LlamaCppConfig(
        gguf_type="f16", kv_type="f16", collapse_identical_experts=False, n_lanes=1, n_slots_per_lane=1
    )
    llama = LlamaCppEngine.from_config(exact)
    try:
        for adapter in (None, "mira"):
            if adapter:
                hf.adapters.load(adapter, registry.adapter_dir(adapter))
                llama.adapters.load(adapter, registry.adapter_dir(adapter))
            summary = GenerationSummary()
            ours = asyncio.run(llama.generate(prompt, adapter=adapter, params=params, summary=summary))
            reference = asyncio.run(hf.generate(prompt, adapter=adapter, params=params))
            assert summary.n_generated_tokens == 64
            assert ours == reference, adapter
    finally:
        llama.close()
        hf.close()


def test_players_of_different_personas_at_once_each_get_their_personas_reply(engine, registry):
    lines = ["Good evening! What's good tonight?", "Tell me about the road north.", "Who are you?"]
    jobs = [(p, line) for p in PERSONAS for line in lines[:2]]

    async def all_at_once():
        return await asyncio.gather(
            *[engine.generate(_messages(registry, p, line), adapter=p, params=GREEDY) for p, line in jobs]
        )

    together = asyncio.run(all_at_once())
    alone = [
        asyncio.run(engine.generate(_messages(registry, p, line), adapter=p, params=GREEDY))
        for p, line in jobs
    ]
    assert together == alone
    by_persona = {p: [t for (q, _), t in zip(jobs, together, strict=True) if q == p] for p in PERSONAS}
    assert by_persona["mira"] != by_persona["orla"] != by_persona["marlowe"]  # the adapters do something


def test_a_second_turn_reuses_the_cached_prefix(engine, registry):
    prompt = _messages(registry, "orla", "How old is the Kestrel?")
    first, second = GenerationSummary(), GenerationSummary()
    asyncio.run(engine.generate(prompt, adapter="orla", params=GREEDY, summary=first))
    asyncio.run(engine.generate(prompt, adapter="orla", params=GREEDY, summary=second))
    assert second.n_cached_tokens == second.n_prompt_tokens - 1  # all but the token decoded for logits
    other_player = _messages(registry, "orla", "Is the reactor safe?")
    third = GenerationSummary()
    asyncio.run(engine.generate(other_player, adapter="orla", params=GREEDY, summary=third))
    assert third.n_cached_tokens > 0.7 * third.n_prompt_tokens  # the persona's system prompt


def test_more_players_of_one_persona_than_a_lane_holds_share_its_cached_prompt_across_lanes(engine, registry):
    # 6 players, 4 slots a lane: the persona's second lane copies the first lane's cached system
    # prompt (state copied between contexts) instead of prefilling it for each of its players.
    lines = [f"I'm traveller number {n}. What's good tonight?" for n in range(6)]
    asyncio.run(engine.generate(_messages(registry, "mira", "Evening!"), adapter="mira", params=GREEDY))
    summaries = [GenerationSummary() for _ in lines]

    async def all_at_once():
        return await asyncio.gather(
            *[
                engine.generate(_messages(registry, "mira", line), adapter="mira", params=GREEDY, summary=s)
                for line, s in zip(lines, summaries, strict=True)
            ]
        )

    together = asyncio.run(all_at_once())
    assert sum(lane.adapter == "mira" and lane.busy() is False for lane in engine._lanes) >= 2
    assert all(s.n_cached_tokens > 0.7 * s.n_prompt_tokens for s in summaries), [
        (s.n_cached_tokens, s.n_prompt_tokens) for s in summaries
    ]
    alone = [
        asyncio.run(engine.generate(_messages(registry, "mira", line), adapter="mira", params=GREEDY))
        for line in lines
    ]
    assert together == alone


def test_a_consumer_that_leaves_stops_its_reply_and_queued_work_of_gone_clients_is_dropped(default_paths):
    engine = LlamaCppEngine.from_config(LlamaCppConfig(n_lanes=1, n_slots_per_lane=1))
    long = GenerationParams(max_new_tokens=64, min_new_tokens=64, temperature=0.0, repetition_penalty=1.0)
    first, queued = GenerationSummary(), GenerationSummary()

    async def scenario():
        stream = engine.stream("Once upon a time", params=long, summary=first)
        await stream.__anext__()
        waiting = asyncio.create_task(engine.generate("A different story", params=long, summary=queued))
        await asyncio.sleep(0.2)
        waiting.cancel()  # its client went away while it waited for the only slot
        await stream.aclose()  # and the first client leaves after one token
        await asyncio.gather(waiting, return_exceptions=True)

    try:
        asyncio.run(scenario())
        engine.wait_idle()
        assert first.finish_reason == "cancelled" and first.n_generated_tokens < 64
        assert queued.finish_reason == "cancelled" and queued.time_to_first_token is None
        assert queued.n_cached_tokens == 0  # never placed, never prefilled
    finally:
        engine.close()


def test_history_that_does_not_fit_a_slot_is_dropped_oldest_first(engine, registry):
    history = [
        {"role": r, "content": f"Turn {i}: " + "a long tale of the road " * 12}
        for i, r in enumerate(["user", "assistant"] * 12)
    ]
    prompt = build_messages(registry.get("mira"), history, "And what now?")
    summary = GenerationSummary()
    text = asyncio.run(engine.generate(prompt, adapter="mira", params=GREEDY, summary=summary))
    assert text and summary.n_prompt_tokens + GREEDY.max_new_tokens < engine.n_ctx_per_slot


def test_adapters_that_cannot_serve_are_named(engine, tmp_path):
    with pytest.raises(AdapterError, match="not loaded"):
        asyncio.run(engine.generate("hi", adapter="nobody", params=GREEDY))
    with pytest.raises(AdapterError, match="no peft adapter"):
        engine.adapters.load("empty", tmp_path)
    with pytest.raises(ModelLoadFailedError, match="GGUF"):
        LlamaCppEngine.from_config(LlamaCppConfig(model=str(tmp_path / "model.safetensors")))


def test_a_reply_ends_at_any_control_token_not_only_end_of_turn(engine):
    """The model sometimes skips <|im_end|> and writes "<|im_start|>user ..."; that ends the reply."""
    vocab = engine.vocab
    for text in ("<|im_end|>", "<|endoftext|>", "<|im_start|>"):
        (token,) = vocab.tokenize(text)
        assert vocab.is_end(token), text
    assert not any(vocab.is_end(t) for t in vocab.tokenize("Hello there, user"))


def test_a_fresh_engines_first_reply_through_an_adapter_does_not_crash(
    default_paths, registry, subprocess_env
):
    """On CPUs with AMX, llama.cpp's extra buffer types crashed the LoRA path (a segfault at the
    first reply, as the on-policy sampler makes it); the engine loads without them. In a child
    process, so that a crash is a failed test, not a dead test run."""
    import subprocess
    import sys

    script = f"""
import asyncio
from pathlib import Path
from companion.backbone import GenerationParams
from companion.backbone.llamacpp_config import LlamaCppConfig
from companion.backbone.llamacpp_engine import LlamaCppEngine
engine = LlamaCppEngine.from_config(LlamaCppConfig(n_lanes=1, n_slots_per_lane=2, n_ctx_per_slot=512,
                                                   base_checkpoint={str(default_paths.moe_dir)!r}))
engine.adapters.load("mira", Path({str(registry.adapter_dir("mira"))!r}))
params = GenerationParams(max_new_tokens=8, temperature=0.0)
print(asyncio.run(engine.generate([{{"role": "user", "content": "Hello, who are you?"}}], adapter="mira", params=params)))
engine.close()
"""
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
