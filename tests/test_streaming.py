"""Streaming generation: deltas, stop strings, limits, seeds and cancellation."""

import asyncio

import pytest

from companion.backbone import GenerationParams, HFBackbone
from companion.backbone.streaming import GenerationSummary, visible_text
from companion.errors import AdapterError, ConfigError
from tiny_models import tiny_mixtral

GREEDY = GenerationParams(max_new_tokens=24, temperature=0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def backbone(tokenizer):
    b = HFBackbone(tiny_mixtral(seed=7), tokenizer)
    yield b
    b.close()


def _collect(backbone, prompt, **kwargs):
    async def run():
        return [d async for d in backbone.stream(prompt, **kwargs)]

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("Hello world", ("STOP",), ("Hello world", False)),
        ("Hello STOP after", ("STOP",), ("Hello ", True)),
        ("Hello ST", ("STOP",), ("Hello ", False)),  # might still become STOP
        ("a\nUser: b", ("\nUser:", "###"), ("a", True)),
        ("x ##", ("###",), ("x ", False)),
        ("caf\ufffd", (), ("caf", False)),  # half a character is held back
    ],
)
def test_visible_text(text, stops, expected):
    assert visible_text(text, stops) == expected


def test_stream_deltas_join_to_the_batch_result(backbone):
    summary = GenerationSummary()
    deltas = _collect(backbone, "Tell me a story", params=GREEDY, summary=summary)
    assert len(deltas) > 1 and all(deltas)
    assert "".join(deltas) == backbone.generate_batch(["Tell me a story"], params=GREEDY)[0]
    assert summary.n_generated_tokens == 24
    assert summary.finish_reason == "length"
    assert summary.n_prompt_tokens > 0 and summary.time_to_first_token is not None


def test_chat_messages_use_the_chat_template(backbone):
    messages = [{"role": "system", "content": "You are Mira."}, {"role": "user", "content": "Hi"}]
    rendered = backbone.render_prompt(messages)
    assert rendered.startswith("<|im_start|>system\nYou are Mira.") and rendered.endswith(
        "<|im_start|>assistant\n"
    )
    assert (
        "".join(_collect(backbone, messages, params=GREEDY))
        == backbone.generate_batch([rendered], params=GREEDY)[0]
    )


def test_max_new_tokens_bounds_the_reply(backbone):
    summary = GenerationSummary()
    _collect(backbone, "Count", params=GenerationParams(max_new_tokens=5, temperature=0), summary=summary)
    assert summary.n_generated_tokens == 5


def test_stop_string_cuts_the_reply_and_stops_generation(backbone):
    full = "".join(_collect(backbone, "Tell me a story", params=GREEDY))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop and stop in full
    summary = GenerationSummary()
    params = GenerationParams(max_new_tokens=24, temperature=0, repetition_penalty=1.0, stop=(stop,))
    cut = "".join(_collect(backbone, "Tell me a story", params=params, summary=summary))
    assert cut == full[: full.index(stop)]
    assert summary.finish_reason == "stop_string"
    assert summary.n_generated_tokens < 24


def test_seed_makes_sampling_reproducible(backbone):
    def sample(seed):
        params = GenerationParams(max_new_tokens=16, temperature=1.0, top_p=1.0, seed=seed)
        return "".join(_collect(backbone, "Once upon a time", params=params))

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)


def test_consumer_that_stops_reading_stops_the_work(backbone):
    summary = GenerationSummary()

    async def read_two():
        stream = backbone.stream(
            "Tell me a story", params=GenerationParams(max_new_tokens=400), summary=summary
        )
        got = []
        async for delta in stream:
            got.append(delta)
            if len(got) == 2:
                break
        await stream.aclose()
        return got

    assert len(asyncio.run(read_two())) == 2
    assert summary.finish_reason == "cancelled"
    assert summary.n_generated_tokens < 10


def test_cancelling_the_task_stops_the_work(backbone):
    summary = GenerationSummary()

    async def consume():
        async for _ in backbone.stream(
            "Tell me", params=GenerationParams(max_new_tokens=2000), summary=summary
        ):
            await asyncio.sleep(0)

    async def run():
        task = asyncio.create_task(consume())
        while summary.n_generated_tokens < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    backbone.wait_idle()  # asyncio.run may close the loop before the worker thread noticed
    assert summary.finish_reason == "cancelled"
    assert summary.n_generated_tokens < 2000


def test_queued_work_of_a_client_that_left_is_never_prefilled(backbone):
    """Issue 16: abandoned turns still cost the model when their prefill runs after the client left."""
    running, queued = GenerationSummary(), GenerationSummary()

    async def run():
        first = backbone.stream(
            "Tell me", params=GenerationParams(max_new_tokens=60, min_new_tokens=60), summary=running
        )
        await first.__anext__()  # the worker is busy with this one
        waiting = asyncio.create_task(backbone.generate("A long prompt " * 50, params=GREEDY, summary=queued))
        await asyncio.sleep(0.05)
        waiting.cancel()  # its client leaves while it waits for the worker
        await asyncio.gather(waiting, return_exceptions=True)
        async for _ in first:
            pass

    asyncio.run(run())
    backbone.wait_idle()
    assert running.n_generated_tokens == 60
    assert queued.finish_reason == "cancelled" and queued.n_prompt_tokens == 0  # never encoded or prefilled


def test_unknown_adapter_is_a_clear_error(backbone):
    with pytest.raises(AdapterError, match="'nobody' is not loaded"):
        _collect(backbone, "hi", adapter="nobody")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"stop": ("",)}, {"repetition_penalty": 0.5}],
)
def test_generation_params_validate(kwargs):
    with pytest.raises(ConfigError):
        GenerationParams(**kwargs)


def test_a_closed_event_loop_counts_as_cancelled_not_as_an_error(backbone):
    summary = GenerationSummary()

    async def start_and_leave():
        stream = backbone.stream(
            "Tell me", params=GenerationParams(max_new_tokens=2000, min_new_tokens=2000), summary=summary
        )
        await stream.__anext__()  # generation is running; the loop now ends without closing the stream

    loop = asyncio.new_event_loop()
    loop.run_until_complete(start_and_leave())
    loop.close()
    backbone.wait_idle()
    assert summary.finish_reason == "cancelled" and summary.n_generated_tokens < 2000


def test_a_reply_ends_where_the_model_starts_the_next_turn_instead_of_ending_its_own(tokenizer):
    """A model that skips <|im_end|> and writes "<|im_start|>user ..." has left its reply; the
    next turn must not reach the player (the special tokens are invisible, the words are not)."""
    import torch

    model = tiny_mixtral(seed=7)
    turn_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    with torch.no_grad():  # after the first token, the next turn's header always wins
        model.lm_head.weight[turn_start] += 50 * model.lm_head.weight.abs().max()
    backbone = HFBackbone(model, tokenizer)
    try:
        summary = GenerationSummary()
        params = GenerationParams(max_new_tokens=12, min_new_tokens=1, temperature=0, repetition_penalty=1.0)
        _collect(backbone, "Hello", params=params, summary=summary)
        assert summary.finish_reason == "eos" and summary.n_generated_tokens <= 2  # its one word, the header
    finally:
        backbone.close()
