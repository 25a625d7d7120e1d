"""The `llamacpp` engine: llama.cpp in-process, continuous batching across players.

One llama.cpp context holds `n_slots` sequences, each with its own KV stream (a player's
conversation and the persona prompt before it). A scheduler thread runs steps: every
step decodes one token for each reply in progress and prefills up to `n_batch` prompt
tokens of replies waiting for their first token, oldest first, in one `llama_decode` per
persona adapter (llama.cpp applies a LoRA to a whole context, so a batch holds one
persona; its server does the same). A new request lands in the slot whose cached tokens
share the longest prefix with its prompt: the same player's previous turn, or another
player's slot of the same persona (copied), so the persona's system prompt is prefilled
once per persona and each conversation's history once per conversation. A consumer that
stops reading is dropped at the next step, before any more of its prompt is prefilled.

Tokens are chosen by `companion.backbone.sampling` with transformers' semantics, so a
greedy reply equals the `hf` engine's on the same weights. Dynamic top-p routing exists
only in the `hf` engine; llama.cpp routes with the checkpoint's own top-k.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from companion.backbone.config import GenerationParams
from companion.backbone.health import EngineHealth
from companion.backbone.llamacpp_adapters import LlamaCppAdapters
from companion.backbone.llamacpp_config import LlamaCppConfig, resolve_gguf
from companion.backbone.prompt_template import ChatTemplate, Prompt, fit_messages
from companion.backbone.routing import RoutingStats
from companion.backbone.sampling import choose_token
from companion.backbone.streaming import GenerationSummary, visible_text
from companion.errors import ConfigError, EngineUnavailableError, GenerationFailedError, ModelLoadFailedError

log = logging.getLogger(__name__)
_END = object()


@dataclass(eq=False)
class _Request:
    """One reply in flight, owned by the scheduler thread once queued."""

    tokens: list[int]
    adapter: str | None
    params: GenerationParams
    push: Callable[[object], None]
    cancelled: threading.Event
    summary: GenerationSummary
    rng: np.random.Generator
    arrived: float = field(default_factory=time.perf_counter)
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet in the KV cache
    generated: list[int] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    emitted: str = ""
    next_token: int | None = None  # sampled, not yet decoded


@dataclass(eq=False)
class _Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # exactly what this sequence's KV holds
    adapter: str | None = None
    request: _Request | None = None
    last_used: float = 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


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
        mparams = ll.llama_model_default_params()
        self._model = ll.llama_model_load_from_file(str(model_path).encode(), mparams)
        if not self._model:
            raise ModelLoadFailedError(
                f"llama.cpp could not load {model_path}; is it a GGUF file of a supported architecture? "
                "`companion models export-gguf DIR` converts a transformers checkpoint."
            )
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        cparams = ll.llama_context_default_params()
        cparams.n_seq_max = config.n_slots
        cparams.n_ctx = config.n_slots * config.n_ctx_per_slot
        cparams.n_batch = config.n_batch + config.n_slots
        cparams.n_ubatch = cparams.n_batch
        cparams.kv_unified = False  # each sequence attends over its own stream only
        threads = config.n_threads or _default_threads()
        cparams.n_threads = cparams.n_threads_batch = threads
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise ModelLoadFailedError(
                f"llama.cpp could not create a context of {config.n_slots} x {config.n_ctx_per_slot} tokens for "
                f"{model_path}; lower n_slots or n_ctx_per_slot."
            )
        self.n_ctx_per_slot = ll.llama_n_ctx_seq(self._ctx)
        self._memory = ll.llama_get_memory(self._ctx)
        self._batch = ll.llama_batch_init(cparams.n_batch, 0, 1)
        self.template = ChatTemplate.from_gguf(
            self._meta("tokenizer.chat_template"),
            bos_token=self._piece(ll.llama_vocab_bos(self._vocab), special=True).decode(errors="replace"),
            eos_token=self._piece(ll.llama_vocab_eos(self._vocab), special=True).decode(errors="replace"),
        )
        self.adapters = LlamaCppAdapters(self._model, base_checkpoint, config.resolved_cache_dir())
        self._slots = [_Slot(seq_id=i) for i in range(config.n_slots)]
        self._waiting: list[_Request] = []
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._active_adapter: object = ()  # what the context has applied; () = never set
        self._closed = threading.Event()
        self._idle = threading.Event()
        self._error: str | None = None
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="llamacpp-scheduler", daemon=True)
        self._thread.start()

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
        return {
            "engine": self.kind,
            "source": self.source,
            "architecture": self._meta("general.architecture"),
            "n_experts": int(self._meta(f"{self._meta('general.architecture')}.expert_count") or 0),
            "n_experts_per_token": int(
                self._meta(f"{self._meta('general.architecture')}.expert_used_count") or 0
            ),
            "routing": "the checkpoint's own top-k (dynamic top-p routing exists only in the hf engine)",
            "file_type": self._meta("general.file_type"),
            "n_slots": self.config.n_slots,
            "n_ctx_per_slot": self.n_ctx_per_slot,
            "adapters": self.adapters.names(),
        }

    async def health(self) -> EngineHealth:
        if self._error:
            return EngineHealth(ok=False, detail=self._error)
        if not self._thread.is_alive():
            return EngineHealth(ok=False, detail="the llama.cpp scheduler thread has stopped")
        busy = sum(s.request is not None for s in self._slots)
        return EngineHealth(
            ok=True, detail=f"{busy}/{len(self._slots)} slots busy, {len(self._waiting)} waiting"
        )

    # ---- the async surface --------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        n_max = len(raw) + 16
        buf = (self._ll.llama_token * n_max)()
        n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, n_max, False, True)
        if n < 0:
            buf = (self._ll.llama_token * -n)()
            n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, -n, False, True)
        return list(buf[:n])

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
        request = _Request(
            tokens=tokens,
            adapter=adapter,
            params=params,
            push=push,
            cancelled=cancelled,
            summary=summary,
            rng=np.random.default_rng(params.seed),
        )
        self._idle.clear()
        self._inbox.put(request)
        try:
            while True:
                item = await items.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()

    async def generate(self, prompt: Prompt, **kwargs: Any) -> str:
        """The whole reply as one string; takes `stream`'s keywords."""
        return "".join([delta async for delta in self.stream(prompt, **kwargs)])

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
        self._ll.llama_batch_free(self._batch)
        self._ll.llama_free(self._ctx)
        self._ll.llama_model_free(self._model)

    # ---- the scheduler thread ---------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                if not self._take_new(block=not self._busy()):
                    break
                self._admit()
                self._drop_cancelled()
                if not self._busy():
                    self._idle.set()
                    continue
                self._step()
        except Exception as e:  # a dead scheduler must say so to every waiting consumer
            log.exception("llama.cpp scheduler failed")
            self._error = f"{type(e).__name__}: {e}"
            for request in self._waiting + [s.request for s in self._slots if s.request]:
                request.push(EngineUnavailableError(f"the llamacpp engine failed: {self._error}"))
                request.push(_END)

    def _busy(self) -> bool:
        return bool(self._waiting) or any(s.request is not None for s in self._slots)

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
            self._finish(request, "cancelled")
        for slot in self._slots:
            if slot.request is not None and slot.request.cancelled.is_set():
                self._release(slot, "cancelled")

    def _admit(self) -> None:
        """Gives waiting requests, oldest first, the free slot that saves the most prefill."""
        while self._waiting:
            free = [s for s in self._slots if s.request is None]
            if not free:
                return
            request = self._waiting.pop(0)
            self._place(request, free)

    def _place(self, request: _Request, free: list[_Slot]) -> None:
        def shared(slot: _Slot) -> int:
            return _common_prefix(slot.tokens, request.tokens) if slot.adapter == request.adapter else 0

        target = max(free, key=lambda s: (shared(s), -s.last_used if s.tokens else 1, -s.seq_id))
        keep = shared(target)
        donor = max(self._slots, key=shared)
        if shared(donor) > keep + 16:  # copying a whole stream beats prefilling 16+ tokens
            self._ll.llama_memory_seq_cp(self._memory, donor.seq_id, target.seq_id, -1, -1)
            target.tokens, keep = list(donor.tokens), shared(donor)
        keep = min(keep, len(request.tokens) - 1)  # the last prompt token is decoded for its logits
        self._ll.llama_memory_seq_rm(self._memory, target.seq_id, keep, -1)
        target.tokens = target.tokens[:keep]
        target.adapter = request.adapter
        target.request = request
        request.pending = request.tokens[keep:]
        request.summary.n_cached_tokens = keep

    def _step(self) -> None:
        groups: dict[str | None, list[_Slot]] = {}
        for slot in sorted((s for s in self._slots if s.request), key=lambda s: s.request.arrived):
            groups.setdefault(slot.adapter, []).append(slot)
        budget = self.config.n_batch
        for adapter, slots in groups.items():
            budget -= self._decode_group(adapter, slots, budget)
        self.steps += 1

    def _decode_group(self, adapter: str | None, slots: list[_Slot], budget: int) -> int:
        """One llama_decode for one persona's slots; returns the prompt tokens it prefilled."""
        ll, batch = self._ll, self._batch
        rows: list[tuple[_Slot, list[int], int]] = []  # slot, tokens added, batch index of logits or -1
        n = 0
        prefilled = 0
        for slot in slots:
            request = slot.request
            if request.next_token is not None:
                chunk, wants_logits = [request.next_token], True
            elif request.pending and budget - prefilled > 0:
                chunk = request.pending[: budget - prefilled]
                wants_logits = len(chunk) == len(request.pending)
                prefilled += len(chunk)
            else:
                continue
            for j, token in enumerate(chunk):
                batch.token[n] = token
                batch.pos[n] = len(slot.tokens) + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.seq_id
                batch.logits[n] = wants_logits and j == len(chunk) - 1
                n += 1
            rows.append((slot, chunk, n - 1 if wants_logits else -1))
        if not rows:
            return 0
        batch.n_tokens = n
        self._apply_adapter(adapter)
        status = ll.llama_decode(self._ctx, batch)
        if status != 0:
            for slot, _, _ in rows:
                slot.request.push(GenerationFailedError(f"llama.cpp could not decode (status {status})."))
                self._release(slot, "error", forget=True)
            return prefilled
        for slot, chunk, logits_at in rows:
            request = slot.request
            slot.tokens.extend(chunk)
            slot.last_used = time.perf_counter()
            if request.next_token is not None:
                request.next_token = None
            else:
                request.pending = request.pending[len(chunk) :]
            if logits_at >= 0:
                self._sample(slot, logits_at)
        return prefilled

    def _apply_adapter(self, adapter: str | None) -> None:
        if adapter == self._active_adapter:
            return
        handle = self.adapters.handle(adapter) if adapter is not None else None
        if handle is None:
            self._ll.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            handles = (self._ll.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            self._ll.llama_set_adapters_lora(self._ctx, handles, 1, scales)
        self._active_adapter = adapter

    def _sample(self, slot: _Slot, logits_at: int) -> None:
        request, params = slot.request, slot.request.params
        row = self._ll.llama_get_logits_ith(self._ctx, logits_at)
        logits = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        eog = self._ll.llama_vocab_eos(self._vocab)
        banned = (eog,) if len(request.generated) < params.min_new_tokens else ()
        token = choose_token(
            logits,
            seen=request.tokens + request.generated,
            temperature=params.temperature,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            rng=request.rng,
            banned=banned,
        )
        summary = request.summary
        if summary.time_to_first_token is None:
            summary.time_to_first_token = time.perf_counter() - request.arrived
        if self._ll.llama_vocab_is_eog(self._vocab, token):
            self._emit(request, final=True)
            self._release(slot, "eos")
            return
        request.generated.append(token)
        summary.n_generated_tokens += 1
        request.raw.extend(self._piece(token))
        if self._emit(request, final=False):
            self._release(slot, "stop_string")
        elif len(request.generated) >= params.max_new_tokens:
            self._emit(request, final=True)
            self._release(slot, "length")
        else:
            request.next_token = token

    def _piece(self, token: int, *, special: bool = False) -> bytes:
        if token < 0:
            return b""
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def _emit(self, request: _Request, *, final: bool) -> bool:
        """Sends the newly visible text; True when a stop string appeared."""
        text = request.raw.decode("utf-8", errors="replace")
        visible, stopped = visible_text(text, request.params.stop)
        if final and not stopped:
            visible = text
        if visible.startswith(request.emitted) and len(visible) > len(request.emitted):
            request.push(visible[len(request.emitted) :])
            request.emitted = visible
        return stopped

    def _release(self, slot: _Slot, reason: str, *, forget: bool = False) -> None:
        """Ends the slot's request; its KV stays cached for the conversation's next turn."""
        request, slot.request = slot.request, None
        if forget:
            self._ll.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.tokens = []
        if request is not None:
            self._finish(request, reason)

    def _finish(self, request: _Request, reason: str) -> None:
        request.summary.finish_reason = reason
        request.summary.seconds = time.perf_counter() - request.arrived
        request.push(_END)


def _default_threads() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)))
