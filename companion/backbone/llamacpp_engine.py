"""The `llamacpp` engine: llama.cpp in-process, continuous batching across players.

A scheduler thread runs steps. Every step decodes one token for each reply in progress
and prefills up to `n_batch` prompt tokens of replies waiting for their first token,
oldest first. Replies run in lanes (`llamacpp_lane.Lane`): one llama.cpp context per busy
persona adapter, sharing the model's weights, since llama.cpp applies a LoRA to a whole
context (its own server likewise never batches two LoRA configurations together). A new
request lands in the slot whose cached tokens share the longest prefix with its prompt:
the same player's previous turn, or another player's slot of the same persona (copied),
or another lane of the same persona (its sequence state copied between contexts), so the
persona's system prompt is prefilled once and each conversation's history once per
conversation. A request that shares a prefix with a prompt still being
prefilled waits for it and copies it. A consumer that stops reading is dropped at the
next step, before any more of its prompt is prefilled.

Tokens are chosen by `companion.backbone.sampling` with transformers' semantics, so a
greedy reply equals the `hf` engine's on the same weights (f16 GGUF, f16 KV cache).
Dynamic top-p routing exists only in the `hf` engine; llama.cpp routes with the
checkpoint's own top-k.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from companion.backbone.config import GenerationParams
from companion.backbone.health import EngineHealth
from companion.backbone.llamacpp_adapters import LlamaCppAdapters
from companion.backbone.llamacpp_config import LlamaCppConfig, resolve_gguf
from companion.backbone.llamacpp_lane import COPY_MIN, END, Lane, Request, Vocab
from companion.backbone.prompt_template import ChatTemplate, Message, Prompt, fit_messages
from companion.backbone.routing import RoutingStats
from companion.backbone.streaming import GenerationSummary
from companion.errors import ConfigError, EngineUnavailableError, GenerationFailedError, ModelLoadFailedError

log = logging.getLogger(__name__)
_KV_TYPES = {"f16": 1, "q8_0": 8}  # ggml type ids


class LlamaCppEngine:
    """A GGUF model served by llama.cpp with continuous batching and per-request persona LoRAs.

    Build it with `LlamaCppEngine.from_config(LlamaCppConfig(...))`.
    """

    kind = "llamacpp"

    def __init__(self, model_path: Path, config: LlamaCppConfig, *, base_checkpoint: Path | None = None):
        import llama_cpp as ll

        self._ll = ll
        # llama-cpp-python prints llama.cpp's load report through this logger; errors only
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.config = config
        self.source = str(model_path)
        ll.llama_backend_init()
        params = ll.llama_model_default_params()
        # llama.cpp's extra CPU buffer types (AMX, weight repacking) crash its LoRA path on CPUs
        # with AMX (llama.cpp #11115, #20824: a segfault at the first reply with an adapter)
        params.use_extra_bufts = False
        self._model = ll.llama_model_load_from_file(str(model_path).encode(), params)
        if not self._model:
            raise ModelLoadFailedError(
                f"llama.cpp could not load {model_path}; is it a GGUF file of a supported architecture? "
                "`companion models export-gguf DIR` converts a transformers checkpoint."
            )
        self.vocab = Vocab(ll, self._model)
        self.template = ChatTemplate.from_gguf(
            self._meta("tokenizer.chat_template"),
            bos_token=self.vocab.piece(self.vocab.bos, special=True).decode(errors="replace"),
            eos_token=self.vocab.piece(self.vocab.eos, special=True).decode(errors="replace"),
        )
        self.adapters = LlamaCppAdapters(self._model, base_checkpoint, config.resolved_cache_dir())
        self._lanes: list[Lane] = [self._new_lane()]  # more are made as personas get busy
        self.n_ctx_per_slot = self._lanes[0].n_ctx_per_slot
        self._waiting: list[Request] = []
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = threading.Event()
        self._idle = threading.Event()
        self._error: str | None = None
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="llamacpp-scheduler", daemon=True)
        self._thread.start()

    def _new_lane(self) -> Lane:
        config = self.config
        return Lane(
            self._ll,
            self._model,
            self.vocab,
            n_slots=config.n_slots_per_lane,
            n_ctx_per_slot=config.n_ctx_per_slot,
            n_batch=config.n_batch,
            n_threads=config.n_threads or len(os.sched_getaffinity(0)),
            kv_type=_KV_TYPES[config.kv_type],
        )

    @classmethod
    def from_config(cls, config: LlamaCppConfig | None = None) -> LlamaCppEngine:
        """Loads the GGUF `config.model` names; the default model's is written by `companion models prepare`.

        Raises:
            ModelNotProvisionedError: the default model's GGUF files are not in the cache.
            ModelLoadFailedError: llama-cpp-python is missing, or the file did not load.
        """
        config = config or LlamaCppConfig()
        try:
            import llama_cpp  # noqa: F401
        except ImportError as e:
            raise ModelLoadFailedError(
                "the llamacpp engine needs llama-cpp-python; scripts/bootstrap installs it "
                "(or pick COMPANION_ENGINE=hf)."
            ) from e
        model_path, base = resolve_gguf(config)
        return cls(model_path, config, base_checkpoint=base)

    # ---- facts ------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def info(self) -> dict[str, Any]:
        """What serves: for `companion models info`, /health and /metrics."""
        arch = self._meta("general.architecture")
        return {
            "engine": self.kind,
            "source": self.source,
            "architecture": arch,
            "n_experts": int(self._meta(f"{arch}.expert_count") or 0),
            "n_experts_per_token": int(self._meta(f"{arch}.expert_used_count") or 0),
            "routing": "the checkpoint's own top-k (dynamic top-p routing exists only in the hf engine)",
            "lanes": f"{len(self._lanes)} of {self.config.n_lanes}, {self.config.n_slots_per_lane} slots each",
            "n_ctx_per_slot": self.n_ctx_per_slot,
            "kv_type": self.config.kv_type,
            "adapters": self.adapters.names(),
        }

    async def health(self) -> EngineHealth:
        if self._error:
            return EngineHealth(ok=False, detail=self._error)
        if not self._thread.is_alive():
            return EngineHealth(ok=False, detail="the llama.cpp scheduler thread has stopped")
        busy = sum(s.request is not None for lane in self._lanes for s in lane.slots)
        return EngineHealth(ok=True, detail=f"{busy} replies in flight, {len(self._waiting)} waiting")

    # ---- the async surface --------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return self.vocab.tokenize(text)

    def render_prompt(self, prompt: Prompt, *, max_new_tokens: int) -> list[int]:
        """The prompt's tokens; the oldest turns are dropped when the slot could not hold the reply."""
        if isinstance(prompt, str):
            tokens = self.tokenize(prompt)
        elif self.template is None:
            raise ConfigError(
                f"{self.source} carries no chat template; pass the prompt as plain text instead."
            )
        else:
            budget = self.n_ctx_per_slot - max_new_tokens - 1
            tokens = fit_messages(prompt, lambda m: self.tokenize(self.template.render(m)), budget)
        if len(tokens) + max_new_tokens >= self.n_ctx_per_slot:
            raise GenerationFailedError(
                f"the prompt is {len(tokens)} tokens and the reply may take {max_new_tokens}; a slot holds "
                f"{self.n_ctx_per_slot}. Shorten the persona card or raise n_ctx_per_slot."
            )
        return tokens

    async def stream(
        self,
        prompt: Prompt,
        *,
        adapter: str | None = None,
        params: GenerationParams | None = None,
        summary: GenerationSummary | None = None,
        routing_stats: RoutingStats | None = None,
    ) -> AsyncIterator[str]:
        """Streams the reply to `prompt` as text deltas; see `companion.protocols.Generator`.

        `routing_stats` stays empty: llama.cpp does not report expert choices.

        Raises:
            AdapterError: `adapter` is not loaded.
            EngineUnavailableError: the scheduler has stopped.
            GenerationFailedError: llama.cpp failed to decode.
        """
        params = params or GenerationParams()
        self.adapters.check(adapter)
        if self._closed.is_set() or self._error:
            raise EngineUnavailableError(f"the llamacpp engine is not running: {self._error or 'closed'}")
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def push(item: object) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the consumer's loop is closed: nobody listens any more
                cancelled.set()

        summary = summary if summary is not None else GenerationSummary()
        tokens = self.render_prompt(prompt, max_new_tokens=params.max_new_tokens)
        summary.n_prompt_tokens = len(tokens)
        self._submit(
            Request(tokens, adapter, params, push, cancelled, summary, np.random.default_rng(params.seed))
        )
        try:
            while True:
                item = await items.get()
                if item is END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()

    def _submit(self, request: Request) -> None:
        self._idle.clear()
        self._inbox.put(request)

    async def generate(self, prompt: Prompt, **kwargs: Any) -> str:
        """The whole reply as one string; takes `stream`'s keywords."""
        return "".join([delta async for delta in self.stream(prompt, **kwargs)])

    def warm(self, prefixes: Sequence[tuple[Sequence[Message], str | None]]) -> None:
        """Prefills prompt prefixes into the cache now (e.g. each persona's system prompt with its
        adapter), so the first players of a persona do not all wait for the same prefill.

        Blocks until they are cached (a few seconds on a CPU for three personas); call it
        before taking traffic. Prefixes beyond the number of lanes are skipped.

        Args:
            prefixes: (messages, adapter) pairs; the messages are rendered without the
                assistant's turn, as they begin every prompt built from them.
        """
        done: list[threading.Event] = []
        for messages, adapter in list(prefixes)[: self.config.n_lanes]:
            if self.template is None or (adapter is not None and not self.adapters.has(adapter)):
                continue
            tokens = self.tokenize(self.template.render(messages, add_generation_prompt=False))
            if not 0 < len(tokens) < self.n_ctx_per_slot:
                continue
            finished = threading.Event()
            done.append(finished)

            def push(item: object, finished: threading.Event = finished) -> None:
                if item is END:
                    finished.set()

            params = GenerationParams(max_new_tokens=1)
            rng = np.random.default_rng(0)
            self._submit(
                Request(tokens, adapter, params, push, threading.Event(), GenerationSummary(), rng, True)
            )
        for finished in done:
            finished.wait(timeout=120)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Blocks until no request is queued or in flight (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._idle.wait(0.05) and self._inbox.empty():
                return

    def close(self) -> None:
        """Stops the scheduler and frees llama.cpp's memory; the engine is unusable afterwards."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._inbox.put(None)
        self._thread.join(timeout=30)
        self.adapters.free_all()
        for lane in self._lanes:
            lane.free()
        self._ll.llama_model_free(self._model)

    # ---- the scheduler thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                if not self._take_new(block=not self._busy()):
                    break
                self._drop_cancelled()
                self._admit()
                if not self._busy():
                    self._idle.set()
                    continue
                budget = self.config.n_batch
                for lane in self._lanes:
                    if lane.busy():
                        budget -= lane.step(budget)
                self.steps += 1
        except Exception as e:  # a dead scheduler must say so to every waiting consumer
            log.exception("llama.cpp scheduler failed")
            self._error = f"{type(e).__name__}: {e}"
            in_flight = [s.request for lane in self._lanes for s in lane.slots if s.request]
            for request in self._waiting + in_flight:
                request.push(EngineUnavailableError(f"the llamacpp engine failed: {self._error}"))
                request.push(END)

    def _busy(self) -> bool:
        return bool(self._waiting) or any(lane.busy() for lane in self._lanes)

    def _take_new(self, *, block: bool) -> bool:
        """Moves queued requests into the waiting list; False once the engine is closing."""
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            self._waiting.append(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._waiting if r.cancelled.is_set()]:
            self._waiting.remove(request)
            request.finish("cancelled")
        for lane in self._lanes:
            lane.drop_cancelled()

    def _admit(self) -> None:
        """Places waiting requests, oldest first, in a lane of their persona with a free slot.

        A request whose prompt shares a longer prefix with a prompt still being prefilled
        than with anything cached waits for that prefill and then copies it: 20 players who
        greet the same persona at once prefill its system prompt once, not 20 times.
        """
        for request in list(self._waiting):
            own = [lane for lane in self._lanes if lane.adapter == request.adapter]
            cached = max((lane.cached_prefix(request.tokens) for lane in own), default=0)
            if any(lane.prefilling_prefix(request.tokens) > cached + COPY_MIN for lane in own):
                continue
            open_lanes = [lane for lane in own if lane.free_slots()]
            lane = (
                max(open_lanes, key=lambda lane: lane.cached_prefix(request.tokens))
                if open_lanes
                else self._lane_for(request.adapter)
            )
            if lane is None:
                continue  # every lane is busy with other personas: wait for one to empty
            donor = max(own, key=lambda other: other.cached_prefix(request.tokens), default=None)
            if donor is not None and donor is not lane:
                lane.adopt(donor, request.tokens)
            self._waiting.remove(request)
            lane.place(request)

    def _lane_for(self, adapter: str | None) -> Lane | None:
        """A lane newly bound to `adapter`: a new one while there are fewer than n_lanes, else the
        least recently used idle one; None when all are busy."""
        if len(self._lanes) < self.config.n_lanes:
            lane = self._new_lane()
            self._lanes.append(lane)
        else:
            idle = [lane for lane in self._lanes if not lane.busy()]
            if not idle:
                return None
            lane = min(idle, key=lambda lane: lane.last_used)
        lane.bind(adapter, self.adapters.handle(adapter) if adapter is not None else None)
        return lane
