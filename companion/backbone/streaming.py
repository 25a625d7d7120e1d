"""Turning generated token ids into text deltas: stop strings, partial characters, cancellation.

These run inside the generation thread; `HFBackbone.stream` moves their output to the
event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

REPLACEMENT_CHAR = "\ufffd"  # what a tokenizer decodes half of a multi-byte character to


def visible_text(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The part of `text` that is safe to show, and whether a stop string occurred.

    Text from the first stop string on is cut. Without a stop, a tail that could still
    grow into a stop string (or is half a character) is held back.

    Args:
        text: everything generated so far.
        stops: stop strings.

    Returns:
        (visible, stopped).
    """
    hits = [i for s in stops if (i := text.find(s)) != -1]
    if hits:
        return text[: min(hits)], True
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    visible = text[: len(text) - hold]
    return visible.rstrip(REPLACEMENT_CHAR), False


@dataclass
class GenerationSummary:
    """What one generation did; filled by the backbone as it runs.

    Attributes:
        n_prompt_tokens: tokens in the prompt.
        n_generated_tokens: tokens the model produced (including any cut by a stop string).
        finish_reason: "eos", "length", "stop_string", "cancelled" or "error".
        seconds: wall time of the generation call.
        time_to_first_token: seconds from the call to the first token.
        n_cached_tokens: prompt tokens an engine took from its prefix cache instead of
            prefilling them (0 where the engine has none).
    """

    n_prompt_tokens: int = 0
    n_generated_tokens: int = 0
    finish_reason: str = ""
    seconds: float = 0.0
    time_to_first_token: float | None = None
    n_cached_tokens: int = 0


class DeltaStreamer(BaseStreamer):
    """A transformers streamer (batch size 1) that emits text deltas through `emit`.

    Args:
        tokenizer: decodes the generated ids.
        stops: stop strings; when one appears, `stopped` turns True and nothing after
            it is emitted.
        emit: called with each new piece of visible text.
        on_token: called once per generated token (timing, counting).
    """

    def __init__(
        self, tokenizer, stops: Sequence[str], emit: Callable[[str], None], on_token: Callable[[], None]
    ):
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.emit = emit
        self.on_token = on_token
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first sends the prompt
            self._prompt_seen = True
            return
        if self.stopped:
            return
        new_ids = value.reshape(-1).tolist()
        self.ids.extend(new_ids)
        for _ in new_ids:
            self.on_token()
        self._flush(final=False)

    def end(self) -> None:
        if not self.stopped:
            self._flush(final=True)

    def _flush(self, *, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        visible, self.stopped = visible_text(text, self.stops)
        if final and not self.stopped:
            visible = text
        if visible.startswith(self.emitted) and len(visible) > len(self.emitted):
            self.emit(visible[len(self.emitted) :])
            self.emitted = visible


class StopWhen(StoppingCriteria):
    """Stops generation when the consumer cancelled or the streamer saw a stop string."""

    def __init__(self, cancelled: threading.Event, streamer: DeltaStreamer | None = None):
        self.cancelled = cancelled
        self.streamer = streamer

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = self.cancelled.is_set() or (self.streamer is not None and self.streamer.stopped)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
