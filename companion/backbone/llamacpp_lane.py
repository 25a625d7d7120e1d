"""One llama.cpp context of the llamacpp engine ("lane"): its sequences, prefix cache and decode step.

A lane serves one persona adapter at a time. llama.cpp applies a LoRA to a whole context,
and changing a context's adapters makes its next decode re-plan the compute graph (about
30 ms here), so instead of switching one context between personas at every step, each
busy persona gets a lane of its own, and lanes share the model's weights.

Within a lane, each sequence ("slot") has its own KV stream and keeps what it holds after
a reply: the same conversation's next turn, or another player's prompt that starts the
same way (the persona's system prompt), reuses it. All work here runs on the engine's
scheduler thread.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from companion.backbone.config import GenerationParams
from companion.backbone.sampling import choose_token
from companion.backbone.streaming import GenerationSummary, visible_text
from companion.errors import GenerationFailedError, ModelLoadFailedError

END = object()  # pushed after a request's last delta
COPY_MIN = 16  # copying another slot's stream beats prefilling this many shared tokens
UNBOUND = ()  # a lane's adapter before it serves any persona


@dataclass(eq=False)
class Request:
    """One reply in flight, owned by the scheduler thread once queued."""

    tokens: list[int]
    adapter: str | None
    params: GenerationParams
    push: Callable[[object], None]
    cancelled: threading.Event
    summary: GenerationSummary
    rng: np.random.Generator
    prefill_only: bool = False  # a warm-up: cache the prompt, generate nothing
    arrived: float = field(default_factory=time.perf_counter)
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet in the KV cache
    generated: list[int] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    emitted: str = ""
    next_token: int | None = None  # sampled, not yet decoded

    def finish(self, reason: str) -> None:
        self.summary.finish_reason = reason
        self.summary.seconds = time.perf_counter() - self.arrived
        self.push(END)


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # exactly what this sequence's KV holds
    request: Request | None = None
    last_used: float = 0.0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Vocab:
    """Token ids to bytes and back, for one llama.cpp model."""

    def __init__(self, ll, model):
        self._ll = ll
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_tokens = ll.llama_vocab_n_tokens(self._vocab)
        self.eos = ll.llama_vocab_eos(self._vocab)
        self.bos = ll.llama_vocab_bos(self._vocab)
        # end of generation, and control tokens: a model that skips its end-of-turn token and
        # writes the next turn's header ("<|im_start|>user") has left its reply
        self.end_tokens = tuple(
            t
            for t in range(self.n_tokens)
            if ll.llama_vocab_is_eog(self._vocab, t) or ll.llama_vocab_is_control(self._vocab, t)
        )
        self._ends = frozenset(self.end_tokens)

    def tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        n_max = len(raw) + 16
        buf = (self._ll.llama_token * n_max)()
        n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, n_max, False, True)
        if n < 0:
            buf = (self._ll.llama_token * -n)()
            n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, -n, False, True)
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        if token < 0:
            return b""
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def is_end(self, token: int) -> bool:
        return token in self._ends


class Lane:
    """A llama.cpp context with `n_slots` sequences, bound to one adapter at a time.

    Args:
        ll: the llama_cpp module.
        model: the loaded model (shared by every lane).
        vocab: its vocabulary.
        n_slots, n_ctx_per_slot, n_batch, n_threads: the context's shape.
        kv_type: ggml type id of the KV cache (1 = f16, 8 = q8_0).
    """

    def __init__(
        self,
        ll,
        model,
        vocab: Vocab,
        *,
        n_slots: int,
        n_ctx_per_slot: int,
        n_batch: int,
        n_threads: int,
        kv_type: int,
    ):
        self._ll, self.vocab = ll, vocab
        cparams = ll.llama_context_default_params()
        cparams.n_seq_max = n_slots
        cparams.n_ctx = n_slots * n_ctx_per_slot
        cparams.n_batch = cparams.n_ubatch = n_batch + n_slots
        cparams.kv_unified = False  # each sequence attends over its own stream only
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.type_k = cparams.type_v = kv_type
        self.ctx = ll.llama_init_from_model(model, cparams)
        if not self.ctx:
            raise ModelLoadFailedError(
                f"llama.cpp could not create a context of {n_slots} x {n_ctx_per_slot} tokens; "
                "lower n_slots or n_ctx_per_slot."
            )
        self.n_ctx_per_slot = ll.llama_n_ctx_seq(self.ctx)
        self.memory = ll.llama_get_memory(self.ctx)
        self.batch = ll.llama_batch_init(cparams.n_batch, 0, 1)
        self.slots = [Slot(seq_id=i) for i in range(n_slots)]
        self.adapter: object = UNBOUND
        self.last_used = 0.0

    # ---- binding ----------------------------------------------------------------------

    def busy(self) -> bool:
        return any(s.request is not None for s in self.slots)

    def free_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.request is None]

    def bind(self, adapter: str | None, handle) -> None:
        """Serves `adapter` from now on; what the lane cached for another adapter is dropped."""
        assert not self.busy()
        for slot in self.slots:
            self._ll.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.tokens = []
        if handle is None:
            self._ll.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            handles = (self._ll.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            self._ll.llama_set_adapters_lora(self.ctx, handles, 1, scales)
        self.adapter = adapter

    def cached_prefix(self, tokens: list[int]) -> int:
        return max((common_prefix(s.tokens, tokens) for s in self.slots), default=0)

    def prefilling_prefix(self, tokens: list[int]) -> int:
        """The longest prefix of `tokens` that a slot here is prefilling but has not cached yet."""
        best = 0
        for slot in self.slots:
            other = slot.request
            if other is not None and other.pending:
                shared = common_prefix(other.tokens, tokens)
                if shared > len(slot.tokens):
                    best = max(best, shared)
        return best

    # ---- placing a request ------------------------------------------------------------

    def adopt(self, donor: Lane, tokens: list[int]) -> int:
        """Copies into a free slot here the slot of `donor` (another context serving the same
        adapter) that shares the longest prefix with `tokens`, when that saves more than
        COPY_MIN tokens of prefill over what this lane holds. A persona's second lane then
        starts from the first lane's cached system prompt instead of prefilling it again for
        each of its players. Returns the tokens copied (0: nothing worth copying, or llama.cpp
        refused, and the prompt is prefilled as before)."""
        assert donor.adapter == self.adapter and donor is not self
        source = max(donor.slots, key=lambda s: common_prefix(s.tokens, tokens))
        if common_prefix(source.tokens, tokens) <= self.cached_prefix(tokens) + COPY_MIN:
            return 0
        free = self.free_slots()
        if not free:
            return 0
        target = min(free, key=lambda s: (bool(s.tokens), s.last_used))  # empty, else least recently used
        ll = self._ll
        size = ll.llama_state_seq_get_size(donor.ctx, source.seq_id)
        buf = (ctypes.c_uint8 * size)()
        n = ll.llama_state_seq_get_data(donor.ctx, buf, size, source.seq_id)
        ll.llama_memory_seq_rm(self.memory, target.seq_id, -1, -1)
        target.tokens = []
        if n == 0 or ll.llama_state_seq_set_data(self.ctx, buf, n, target.seq_id) == 0:
            ll.llama_memory_seq_rm(self.memory, target.seq_id, -1, -1)
            return 0
        target.tokens = list(source.tokens)
        target.last_used = time.perf_counter()
        return len(target.tokens)

    def place(self, request: Request) -> None:
        """Puts `request` in the free slot that saves the most prefill (copying a busy slot's cache
        when that saves more)."""
        free = self.free_slots()
        target = max(
            free, key=lambda s: (common_prefix(s.tokens, request.tokens), -s.last_used if s.tokens else 1)
        )
        keep = common_prefix(target.tokens, request.tokens)
        donor = max(self.slots, key=lambda s: common_prefix(s.tokens, request.tokens))
        if common_prefix(donor.tokens, request.tokens) > keep + COPY_MIN:
            self._ll.llama_memory_seq_cp(self.memory, donor.seq_id, target.seq_id, -1, -1)
            target.tokens, keep = list(donor.tokens), common_prefix(donor.tokens, request.tokens)
        if not request.prefill_only:
            keep = min(keep, len(request.tokens) - 1)  # the last prompt token is decoded for its logits
        self._ll.llama_memory_seq_rm(self.memory, target.seq_id, keep, -1)
        target.tokens = target.tokens[:keep]
        target.request = request
        request.pending = request.tokens[keep:]
        request.summary.n_cached_tokens = keep
        if request.prefill_only and not request.pending:
            self.release(target, "cached")

    def release(self, slot: Slot, reason: str, *, forget: bool = False) -> None:
        """Ends the slot's request; its KV stays cached for the conversation's next turn."""
        request, slot.request = slot.request, None
        if forget:
            self._ll.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.tokens = []
        if request is not None:
            request.finish(reason)

    def drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.request is not None and slot.request.cancelled.is_set():
                self.release(slot, "cancelled")

    # ---- one step ---------------------------------------------------------------------

    def step(self, budget: int) -> int:
        """One llama_decode: a token for each reply in progress, then up to `budget` prompt tokens
        of replies still prefilling, oldest first. Returns the prompt tokens it took."""
        batch, n, prefilled = self.batch, 0, 0
        rows: list[tuple[Slot, list[int], int]] = []  # slot, tokens added, batch index of logits or -1
        for slot in sorted((s for s in self.slots if s.request), key=lambda s: s.request.arrived):
            request = slot.request
            if request.next_token is not None:
                chunk, wants_logits = [request.next_token], True
            elif request.pending and budget - prefilled > 0:
                chunk = request.pending[: budget - prefilled]
                wants_logits = len(chunk) == len(request.pending) and not request.prefill_only
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
        status = self._ll.llama_decode(self.ctx, batch)
        self.last_used = time.perf_counter()
        if status != 0:
            for slot, _, _ in rows:
                slot.request.push(GenerationFailedError(f"llama.cpp could not decode (status {status})."))
                self.release(slot, "error", forget=True)
            return prefilled
        for slot, chunk, logits_at in rows:
            self._advance(slot, chunk, logits_at)
        return prefilled

    def _advance(self, slot: Slot, chunk: list[int], logits_at: int) -> None:
        request = slot.request
        slot.tokens.extend(chunk)
        slot.last_used = self.last_used
        if request.next_token is not None:
            request.next_token = None
        else:
            request.pending = request.pending[len(chunk) :]
        if logits_at >= 0:
            self._sample(slot, logits_at)
        elif request.prefill_only and not request.pending:
            self.release(slot, "cached")

    def _sample(self, slot: Slot, logits_at: int) -> None:
        request, params = slot.request, slot.request.params
        row = self._ll.llama_get_logits_ith(self.ctx, logits_at)
        logits = np.ctypeslib.as_array(row, shape=(self.vocab.n_tokens,))
        token = choose_token(
            logits,
            seen=request.tokens + request.generated,
            temperature=params.temperature,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            rng=request.rng,
            banned=self.vocab.end_tokens if len(request.generated) < params.min_new_tokens else (),
        )
        summary = request.summary
        if summary.time_to_first_token is None:
            summary.time_to_first_token = time.perf_counter() - request.arrived
        if self.vocab.is_end(token):
            _emit(request, final=True)
            self.release(slot, "eos")
            return
        request.generated.append(token)
        summary.n_generated_tokens += 1
        request.raw.extend(self.vocab.piece(token))
        if _emit(request, final=False):
            self.release(slot, "stop_string")
        elif len(request.generated) >= params.max_new_tokens:
            _emit(request, final=True)
            self.release(slot, "length")
        else:
            request.next_token = token

    def free(self) -> None:
        self._ll.llama_batch_free(self.batch)
        self._ll.llama_free(self.ctx)


def _emit(request: Request, *, final: bool) -> bool:
    """Sends the newly visible text; True when a stop string appeared."""
    text = request.raw.decode("utf-8", errors="replace")
    visible, stopped = visible_text(text, request.params.stop)
    if final and not stopped:
        visible = text
    if visible.startswith(request.emitted) and len(visible) > len(request.emitted):
        request.push(visible[len(request.emitted) :])
        request.emitted = visible
    return stopped
