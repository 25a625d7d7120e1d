"""The `openai` engine: any OpenAI-compatible chat-completions server does the generating.

vLLM (`--enable-lora --lora-modules mira=/path ...`: each persona's adapter is a model
name), llama.cpp's `llama-server` (`--lora mira.gguf --lora orla.gguf`: each adapter an id,
chosen per request), SGLang and Ollama (a model per persona) all speak it. A persona is
mapped to what its server calls it:

- `persona_models` in the config: persona id -> model name, sent as `model`;
- else, for a llama.cpp server, the adapter whose file name (without `.gguf`) is the
  persona id, found at GET /lora-adapters and sent as `lora: [{id, scale}]`;
- else, a model the server lists (GET /v1/models) whose name is the persona id.

A request is retried (with a short backoff) only while nothing has been streamed yet;
an unreachable or failing server is an `EngineUnavailableError`, which the WebSocket layer
sends as `engine_unavailable`. Leaving the stream closes the HTTP response, which stops the
server's generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from companion.backbone.config import GenerationParams
from companion.backbone.health import EngineHealth
from companion.backbone.prompt_template import Prompt
from companion.backbone.routing import RoutingStats
from companion.backbone.streaming import GenerationSummary, visible_text
from companion.errors import AdapterError, ConfigError, EngineUnavailableError, GenerationFailedError
from companion.yaml_config import dataclass_from_yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAIEngineConfig:
    """Where the OpenAI-compatible server is and how to talk to it.

    Attributes:
        base_url: the API root, e.g. "http://127.0.0.1:8080/v1".
        model: the model name for requests without a persona model; None takes the
            first model the server lists.
        api_key: sent as a bearer token when set.
        persona_models: persona id -> the server's model name for that persona.
        timeout_s: seconds to wait for the server's next bytes before giving up.
        connect_timeout_s: seconds to wait for a connection.
        retries: further attempts when the server cannot be reached or fails (5xx)
            before the first token.
        rediscover_s: how often to ask the server again which models and adapters it has.
        max_in_flight: requests sent at once; more wait here. None: the server's slot count
            where it says (llama.cpp's GET /props), else no limit. Requests wait here rather
            than in the server's queue, so a player who leaves while waiting costs the
            server nothing: the request is never sent.
    """

    base_url: str = "http://127.0.0.1:8080/v1"
    model: str | None = None
    api_key: str | None = None
    persona_models: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    retries: int = 2
    rediscover_s: float = 10.0
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url is {self.base_url!r}; expected an http(s) URL of the API root, "
                "e.g. http://127.0.0.1:8080/v1."
            )
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError("timeout_s and connect_timeout_s must be > 0 seconds.")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight is {self.max_in_flight}; expected an integer >= 1 or unset.")
        if self.retries < 0:
            raise ConfigError(f"retries is {self.retries}; expected an integer >= 0.")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @classmethod
    def from_file(cls, path: str | Path) -> OpenAIEngineConfig:
        return dataclass_from_yaml(cls, path)

    @property
    def server_root(self) -> str:
        """The server's root (llama.cpp's /health and /lora-adapters live there, not under /v1)."""
        return self.base_url.removesuffix("/v1")


class OpenAIAdapters:
    """Persona adapters as the server has them (the `AdapterRegistry` protocol).

    They live on the server: `load` cannot add one; configure the server instead.
    """

    def __init__(self, config: OpenAIEngineConfig):
        self.config = config
        self.lora_ids: dict[str, int] = {}
        self.models: list[str] = []
        self.total_slots: int | None = None
        self.reachable = False
        self._discovered_at = float("-inf")

    def discover(self, *, force: bool = False) -> None:
        """Asks the server which models and LoRA adapters it serves (cached for `rediscover_s`)."""
        if not force and time.monotonic() - self._discovered_at < self.config.rediscover_s:
            return
        self._discovered_at = time.monotonic()
        headers = _headers(self.config)
        try:
            with httpx.Client(timeout=self.config.connect_timeout_s, headers=headers) as client:
                listed = client.get(f"{self.config.base_url}/models")
                if listed.status_code == 200:
                    self.models = [m["id"] for m in listed.json().get("data", []) if "id" in m]
                props = client.get(f"{self.config.server_root}/props")
                if props.status_code == 200 and isinstance(props.json().get("total_slots"), int):
                    self.total_slots = props.json()["total_slots"]
                loras = client.get(f"{self.config.server_root}/lora-adapters")
                if loras.status_code == 200 and isinstance(loras.json(), list):
                    self.lora_ids = {
                        Path(item["path"]).name.removesuffix(".gguf"): int(item["id"])
                        for item in loras.json()
                        if "path" in item and "id" in item
                    }
            self.reachable = True
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            self.reachable = False
            log.warning("could not ask %s what it serves: %s", self.config.base_url, e)

    def names(self) -> list[str]:
        self.discover()
        return sorted(set(self.config.persona_models) | set(self.lora_ids) | set(self.models))

    def has(self, name: str) -> bool:
        return name in self.config.persona_models or name in self.names()

    def known(self, name: str) -> bool:
        """What the last discovery found; never asks the server (safe on the event loop)."""
        return name in self.config.persona_models or name in self.lora_ids or name in self.models

    def check(self, name: str | None) -> None:
        """Raises AdapterError unless the last discovery found `name` (no HTTP: called on the event loop;
        `has` is what rediscovers, and the pipeline calls it off the loop)."""
        if name is not None and not self.known(name):
            raise AdapterError(
                f"the server at {self.config.base_url} serves no adapter or model for persona {name!r}; "
                "start it with one (vLLM: --lora-modules NAME=PATH; llama-server: --lora NAME.gguf) "
                "or map the persona in persona_models."
            )

    def load(self, name: str, path: str | Path) -> None:
        """Nothing to load here: succeeds when the server serves `name`, and while the server cannot be
        asked (the persona speaks without its adapter until it answers again).

        Raises:
            AdapterError: the server answers and does not serve `name`.
        """
        if self.has(name) or not self.reachable:
            return
        raise AdapterError(
            f"the openai engine cannot load {path} itself; persona adapters live on the server. Serve it there "
            f"(vLLM: --lora-modules {name}={path}; llama-server: --lora {name}.gguf after converting it with "
            "`companion models export-gguf`), or map the persona in persona_models."
        )

    def request_fields(self, name: str | None, default_model: str) -> dict[str, Any]:
        """The body fields that select the persona: a model name, or llama.cpp LoRA scales."""
        if name is not None and name in self.config.persona_models:
            return {"model": self.config.persona_models[name]}
        fields: dict[str, Any] = {"model": default_model}
        if self.lora_ids:  # llama.cpp: every adapter off but this persona's
            fields["lora"] = [{"id": i, "scale": 1.0 if n == name else 0.0} for n, i in self.lora_ids.items()]
        if name is not None and name not in self.lora_ids and name in self.models:
            fields["model"] = name
        return fields


class OpenAIEngine:
    """Generation on an OpenAI-compatible server. Build with `OpenAIEngine.from_config(config)`."""

    kind = "openai"

    def __init__(self, config: OpenAIEngineConfig):
        self.config = config
        self.source = config.base_url
        self.adapters = OpenAIAdapters(config)
        self._clients: dict[
            int, httpx.AsyncClient
        ] = {}  # one per event loop: pooled connections are the loop's
        self._gates: dict[int, asyncio.Semaphore] = {}

    @property
    def _gate(self) -> asyncio.Semaphore | None:
        limit = self.config.max_in_flight or self.adapters.total_slots
        if limit is None:
            return None
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in self._gates:
            self._gates[loop_id] = asyncio.Semaphore(limit)
        return self._gates[loop_id]

    @property
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None or client.is_closed:
            timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
            client = self._clients[id(loop)] = httpx.AsyncClient(
                timeout=timeout, headers=_headers(self.config)
            )
        return client

    @classmethod
    def from_config(cls, config: OpenAIEngineConfig) -> OpenAIEngine:
        engine = cls(config)
        engine.adapters.discover(force=True)
        return engine

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.kind,
            "source": self.source,
            "model": self.config.model or (self.adapters.models[0] if self.adapters.models else None),
            "routing": "whatever the server's model does",
            "adapters": self.adapters.names(),
        }

    def warm(self, prefixes) -> None:
        """Nothing to prepare: this engine keeps no prefix cache of its own."""

    async def health(self) -> EngineHealth:
        for url in (f"{self.config.server_root}/health", f"{self.config.base_url}/models"):
            try:
                response = await self._client.get(url, timeout=self.config.connect_timeout_s)
            except httpx.HTTPError as e:
                return EngineHealth(ok=False, detail=f"{self.config.base_url} is unreachable ({_why(e)})")
            if response.status_code == 200:
                return EngineHealth(ok=True, detail=f"{url} answered")
        return EngineHealth(ok=False, detail=f"{self.config.base_url} answered {response.status_code}")

    def close(self) -> None:
        """Closes the HTTP connections of the running loop's client (others went with their loops)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        client = self._clients.pop(id(loop), None)
        if client is not None:
            loop.create_task(client.aclose())

    async def generate(self, prompt: Prompt, **kwargs: Any) -> str:
        return "".join([delta async for delta in self.stream(prompt, **kwargs)])

    async def stream(
        self,
        prompt: Prompt,
        *,
        adapter: str | None = None,
        params: GenerationParams | None = None,
        summary: GenerationSummary | None = None,
        routing_stats: RoutingStats | None = None,
    ) -> AsyncIterator[str]:
        """Streams the server's reply; see `companion.protocols.Generator`."""
        params = params or GenerationParams()
        summary = summary if summary is not None else GenerationSummary()
        self.adapters.check(adapter)
        body = self._body(prompt, adapter, params)
        url = f"{self.config.base_url}/{'completions' if isinstance(prompt, str) else 'chat/completions'}"
        gate = self._gate
        if gate is not None:
            await gate.acquire()
        try:
            async for delta in self._stream_unlimited(url, body, params, summary):
                yield delta
        finally:
            if gate is not None:
                gate.release()

    async def _stream_unlimited(
        self, url: str, body: dict[str, Any], params: GenerationParams, summary: GenerationSummary
    ) -> AsyncIterator[str]:
        started, raw, emitted = time.perf_counter(), "", ""
        for attempt in range(self.config.retries + 1):
            events = self._events(url, body, summary)
            try:
                async for piece in events:
                    if summary.time_to_first_token is None:
                        summary.time_to_first_token = time.perf_counter() - started
                    raw += piece
                    visible, stopped = visible_text(raw, params.stop)
                    if len(visible) > len(emitted):
                        yield visible[len(emitted) :]
                        emitted = visible
                    if stopped:
                        summary.finish_reason = "stop_string"
                        break
                break
            except EngineUnavailableError:
                if raw or attempt == self.config.retries:
                    raise
                await asyncio.sleep(0.25 * 2**attempt)
            finally:
                await events.aclose()  # closes the HTTP response now: the server stops generating
        if raw and len(raw) > len(emitted) and summary.finish_reason != "stop_string":
            yield raw[len(emitted) :]
        summary.seconds = time.perf_counter() - started

    def _body(self, prompt: Prompt, adapter: str | None, params: GenerationParams) -> dict[str, Any]:
        default_model = self.config.model or (self.adapters.models[0] if self.adapters.models else "default")
        body: dict[str, Any] = {
            **self.adapters.request_fields(adapter, default_model),
            "stream": True,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p if params.temperature > 0 else 1.0,
        }
        if isinstance(prompt, str):
            body["prompt"] = prompt
        else:
            body["messages"] = [{"role": m["role"], "content": m["content"]} for m in prompt]
        if params.seed is not None:
            body["seed"] = params.seed
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty  # vLLM, SGLang
            body["repeat_penalty"] = params.repetition_penalty  # llama.cpp, Ollama
        return body

    async def _events(self, url: str, body: dict[str, Any], summary: GenerationSummary) -> AsyncIterator[str]:
        """Text pieces of one streamed response (server-sent events)."""
        try:
            async with self._client.stream("POST", url, json=body) as response:
                if response.status_code >= 500:
                    text = (await response.aread()).decode(errors="replace")[:300]
                    raise EngineUnavailableError(f"{url} failed with {response.status_code}: {text}")
                if response.status_code >= 400:
                    text = (await response.aread()).decode(errors="replace")[:300]
                    raise GenerationFailedError(
                        f"{url} rejected the request ({response.status_code}): {text}"
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    piece = _piece(json.loads(data), summary)
                    if piece:
                        yield piece
        except httpx.HTTPError as e:
            raise EngineUnavailableError(
                f"the model server at {self.config.base_url} is unreachable or stopped answering ({_why(e)}); "
                "start it, or check COMPANION_OPENAI_BASE_URL."
            ) from e
        except json.JSONDecodeError as e:
            raise GenerationFailedError(f"{url} sent an event that is not JSON: {e}") from e


def _piece(event: dict[str, Any], summary: GenerationSummary) -> str:
    if "error" in event:
        raise GenerationFailedError(f"the model server reported: {event['error']}")
    if usage := event.get("usage"):
        summary.n_prompt_tokens = int(usage.get("prompt_tokens") or summary.n_prompt_tokens)
    choices = event.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
    if piece:
        summary.n_generated_tokens += 1  # one event per token on vLLM and llama.cpp
    if reason := choice.get("finish_reason"):
        summary.finish_reason = {"stop": "eos", "length": "length"}.get(reason, reason)
    return piece


def _headers(config: OpenAIEngineConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


def _why(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
