"""The `hf` engine: transformers + peft, on CPU or GPU. The reference engine.

One model is shared by every persona; each persona's voice is a named LoRA adapter that
a request selects. Generation runs on one worker thread (a lock serialises model calls:
two decodes at once on two CPU cores only slow each other down) and is streamed to the
event loop as text deltas.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from companion.backbone.adapters import AdapterSet
from companion.backbone.config import DEFAULT_MODEL, BackboneConfig, GenerationParams
from companion.backbone.health import EngineHealth
from companion.backbone.prompt_template import Prompt
from companion.backbone.provision import prepare_default_model
from companion.backbone.routing import DynamicRouter, RoutingStats, install_routing
from companion.backbone.streaming import DeltaStreamer, GenerationSummary, StopWhen, visible_text
from companion.errors import ConfigError, GenerationFailedError, ModelLoadFailedError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_END = object()


class HFBackbone:
    """The `hf` engine: a loaded causal LM with persona adapters, streaming generation and routing control.

    Build it with `HFBackbone.from_config(config)`; the constructor takes a model and
    tokenizer already loaded (tests build tiny ones from a config).

    Args:
        model: a transformers causal LM.
        tokenizer: its tokenizer; a chat template is used when the prompt is messages.
        config: the settings it was loaded with (routing is installed from it).
        source: where the weights came from, for `info()`.
    """

    kind = "hf"

    def __init__(self, model, tokenizer, config: BackboneConfig | None = None, *, source: str = "in-memory"):
        self.config = config or BackboneConfig()
        self.source = source
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.end_token_ids = end_token_ids(model, tokenizer)
        self.routers: list[DynamicRouter] = install_routing(model, self.config.routing)
        self.adapters = AdapterSet(model.eval())
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backbone")

    # ---- loading -------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: BackboneConfig | None = None) -> HFBackbone:
        """Loads the model `config.model` names, provisioning the default one if needed.

        Raises:
            ModelNotProvisionedError: the default model's package is not installed.
            ModelLoadFailedError: a local path or hub name did not load.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = config or BackboneConfig()
        if config.n_threads:
            torch.set_num_threads(config.n_threads)
        path, local_only = _resolve_model(config)
        device = _resolve_device(config.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=_DTYPES[config.dtype], local_files_only=local_only
            ).to(device)
        except (OSError, ValueError, KeyError) as e:
            where = (
                "the local directory" if local_only else "the model hub (the name is not a local directory)"
            )
            raise ModelLoadFailedError(
                f"Could not load model {config.model!r} from {where}: {e}. Give 'default', a directory "
                "holding a transformers checkpoint (config.json, *.safetensors, tokenizer files), or a hub "
                "name you can download."
            ) from e
        return cls(model, tokenizer, config, source=str(path))

    def wait_idle(self) -> None:
        """Blocks until the generation thread has finished the work it was given.

        A cancelled consumer stops the model within one token, but its generation may end
        just after the consumer did (e.g. when the event loop shuts down first).
        """
        self._executor.submit(lambda: None).result()

    def close(self) -> None:
        """Stops the generation thread; the backbone is unusable afterwards."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    # ---- facts -----------------------------------------------------------------------

    @property
    def model(self):
        """The model as called: the peft wrapper when adapters are loaded, else the base."""
        return self.adapters.model

    def info(self) -> dict[str, Any]:
        """A summary for `companion models info` and the health endpoint."""
        base = self.adapters.base_model
        cfg = base.config
        return {
            "engine": self.kind,
            "source": self.source,
            "architecture": type(base).__name__,
            "parameters": sum(p.numel() for p in base.parameters()),
            "layers": getattr(cfg, "num_hidden_layers", None),
            "hidden_size": getattr(cfg, "hidden_size", None),
            "n_experts": self.routers[0].num_experts if self.routers else 0,
            "routing": (
                {
                    "policy": self.routers[0].policy,
                    "top_k": self.routers[0].top_k,
                    "top_p": self.routers[0].top_p,
                }
                if self.routers
                else None
            ),
            "dtype": str(next(base.parameters()).dtype).removeprefix("torch."),
            "device": str(next(base.parameters()).device),
            "adapters": self.adapters.names(),
        }

    def warm(self, prefixes) -> None:
        """Nothing to prepare: this engine keeps no prefix cache of its own."""

    async def health(self) -> EngineHealth:
        """In-process: healthy while the generation thread takes work."""
        if self._executor._shutdown:
            return EngineHealth(ok=False, detail="the hf engine was closed")
        return EngineHealth(ok=True, detail="in-process")

    # ---- prompts ---------------------------------------------------------------------

    def render_prompt(self, prompt: Prompt) -> str:
        """Messages through the chat template (ready for the assistant's turn); text as is."""
        if isinstance(prompt, str):
            return prompt
        if not self.tokenizer.chat_template:
            raise ConfigError("this tokenizer has no chat template; pass the prompt as plain text instead.")
        return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)

    def _encode(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        texts = [self.render_prompt(p) for p in prompts]
        self.tokenizer.padding_side = "left"  # generation appends on the right
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.adapters.device) for k, v in enc.items()}

    def _generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "min_new_tokens": params.min_new_tokens or None,
            "do_sample": params.temperature > 0,
            "repetition_penalty": params.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.end_token_ids,
        }
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:  # neutralise sampling defaults a checkpoint's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    # ---- generation ------------------------------------------------------------------

    async def stream(
        self,
        prompt: Prompt,
        *,
        adapter: str | None = None,
        params: GenerationParams | None = None,
        summary: GenerationSummary | None = None,
        routing_stats: RoutingStats | None = None,
    ) -> AsyncIterator[str]:
        """Streams the reply to `prompt` as text deltas.

        Stopping iteration early (break, `aclose()`, task cancellation) stops the model
        within one token.

        Args:
            prompt: plain text, or chat messages rendered with the chat template.
            adapter: a loaded adapter's name; None uses the bare backbone.
            params: decoding settings.
            summary: filled with token counts, timings and the finish reason.
            routing_stats: filled with experts used per token, per layer.

        Raises:
            AdapterError: `adapter` is not loaded.
            GenerationFailedError: the model raised; the cause is chained.
        """
        params = params or GenerationParams()
        self.adapters.check(adapter)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def push(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the consumer's event loop is closed: nobody is listening any more
                cancelled.set()

        work = loop.run_in_executor(
            self._executor,
            self._stream_blocking,
            prompt,
            adapter,
            params,
            summary,
            routing_stats,
            cancelled,
            push,
        )
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancelled.set()
            await asyncio.shield(work)

    async def generate(self, prompt: Prompt, **kwargs: Any) -> str:
        """The whole reply as one string; takes `stream`'s keywords."""
        return "".join([delta async for delta in self.stream(prompt, **kwargs)])

    def _stream_blocking(self, prompt, adapter, params, summary, routing_stats, cancelled, push) -> None:
        summary = summary if summary is not None else GenerationSummary()
        started = time.perf_counter()
        if cancelled.is_set():  # the client left while this waited for the model: skip its prefill
            summary.finish_reason = "cancelled"
            push(_END)
            return

        def on_token() -> None:
            summary.n_generated_tokens += 1
            if summary.time_to_first_token is None:
                summary.time_to_first_token = time.perf_counter() - started

        streamer = DeltaStreamer(self.tokenizer, params.stop, push, on_token)
        try:
            with self._lock, self._routing_stats(routing_stats):
                inputs = self._encode([prompt])
                summary.n_prompt_tokens = int(inputs["input_ids"].shape[1])
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                self.model.generate(
                    **inputs,
                    **self._generate_kwargs(params),
                    **self.adapters.generate_kwargs([adapter]),
                    streamer=streamer,
                    stopping_criteria=[StopWhen(cancelled, streamer)],
                )
            summary.finish_reason = _finish_reason(streamer, cancelled, summary, params)
        except Exception as e:  # the consumer gets it on the event loop
            summary.finish_reason = "error"
            push(GenerationFailedError(f"generation failed: {type(e).__name__}: {e}"))
            log.exception("generation failed")
            push(_END)
            return
        finally:
            summary.seconds = time.perf_counter() - started
        push(_END)

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        *,
        adapters: Sequence[str | None] | None = None,
        params: GenerationParams | None = None,
    ) -> list[str]:
        """Generates for several prompts in one batch; each row may use another persona's adapter.

        Blocking; call it from a worker thread in async code.

        Args:
            prompts: texts or message lists.
            adapters: one adapter name (or None for the bare backbone) per prompt.
            params: decoding settings shared by the batch.

        Returns:
            One reply per prompt, stop strings applied.
        """
        params = params or GenerationParams()
        adapters = list(adapters) if adapters is not None else [None] * len(prompts)
        if len(adapters) != len(prompts):
            raise ConfigError(
                f"got {len(prompts)} prompts but {len(adapters)} adapters; give one per prompt."
            )
        for name in adapters:
            self.adapters.check(name)
        with self._lock:
            inputs = self._encode(prompts)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(
                **inputs, **self._generate_kwargs(params), **self.adapters.generate_kwargs(adapters)
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [visible_text(t, params.stop)[0] if params.stop else t for t in texts]

    def _routing_stats(self, stats: RoutingStats | None):
        return _AttachStats(self.routers, stats)


class _AttachStats:
    """Points every router at `stats` for the duration of one generation."""

    def __init__(self, routers: list[DynamicRouter], stats: RoutingStats | None):
        self.routers, self.stats = routers, stats

    def __enter__(self) -> None:
        for router in self.routers:
            router.stats = self.stats

    def __exit__(self, *exc: object) -> None:
        for router in self.routers:
            router.stats = None


def end_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a reply: the checkpoint's end-of-turn tokens and every special token
    (a model that skips its end-of-turn token and writes the next turn's "<|im_start|>user" has
    left its reply; special tokens are never part of one)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    special = {i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special}
    ids = (
        set(configured if isinstance(configured, list) else [configured])
        | set(tokenizer.all_special_ids)
        | special
    )
    return sorted(i for i in ids if i is not None)


def _finish_reason(streamer: DeltaStreamer, cancelled: threading.Event, summary, params) -> str:
    if streamer.stopped:
        return "stop_string"
    if cancelled.is_set():
        return "cancelled"
    return "length" if summary.n_generated_tokens >= params.max_new_tokens else "eos"


def _resolve_model(config: BackboneConfig) -> tuple[Path | str, bool]:
    """(path or hub name, local_files_only). Only a name that is no local path may reach a hub."""
    if config.model == DEFAULT_MODEL:
        return prepare_default_model(config.cache_dir, n_experts=config.n_experts).moe_dir, True
    path = Path(config.model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadFailedError(
                f"{path} exists but holds no config.json; point model at a transformers checkpoint directory."
            )
        return path, True
    if config.model.startswith((".", "/", "~")):
        raise ModelLoadFailedError(f"model path {config.model} does not exist.")
    log.info("model %r is not a local path; loading it from the model hub as named", config.model)
    return config.model, False


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device is {device!r} but CUDA is not available here; use 'cpu' or 'auto'.")
    return device
