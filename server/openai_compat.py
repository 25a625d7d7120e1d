"""The OpenAI-compatible front door: `POST /v1/chat/completions` and `GET /v1/models`.

Any OpenAI chat client (the `openai` SDK, SillyTavern, Open WebUI) can talk to a persona with
memory: `model` names the persona, `user` names the player, the API key is the same
`Authorization: Bearer <key>` as the rest of the API. Each request runs one whole Companion
turn (memory search, reflection, generation, post-check, memory write) on its last `user`
message; Companion keeps the conversation itself, so the earlier messages a client resends
are not read. Errors are OpenAI's shape, `{"error": {"message", "type", "code"}}`.

Replies carry Companion's metadata in an extra field `companion` (the non-streamed
completion, and the last chunk of a stream). A streamed draft that the post-check revised
cannot be taken back: that last chunk then says `"revised": true` and holds the final
`text`, which is also what memory keeps.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from companion.errors import CompanionError, EngineUnavailableError
from persona_adapters.errors import UnknownPersonaError
from server.errors import BackendUnavailableError
from server.protocol import MAX_TEXT_CHARS, PlayerId, reply_metadata
from server.services import Services, scoped

log = logging.getLogger(__name__)
router = APIRouter()
MAX_BODY_BYTES = 1024 * 1024  # clients resend the whole conversation; only the last line is used
_PLAYER_ID = TypeAdapter(PlayerId)


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[_Part] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields Companion reads; other OpenAI fields (temperature, max_tokens, ...) are
    accepted and ignored: the server's settings and the persona decide them."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=64)
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = Field(None, max_length=256)  # the player id, checked in _player()
    stream: bool = False
    stream_options: StreamOptions | None = None


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.kind = status, code, message, kind
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code, "param": None}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _services(request: Request) -> Services:
    return request.app.state.services


async def _tenant(request: Request, services: Services) -> str:
    tenant = services.tenant_of_header(request.headers.get("authorization"))
    if tenant is None:
        raise OpenAIError(
            401,
            "invalid_api_key",
            "Send 'Authorization: Bearer <API key>' with a key from COMPANION_API_KEYS "
            "(the openai SDK: api_key=...).",
            "authentication_error",
        )
    wait = await services.limiter.hit(tenant)
    if wait is not None:
        raise OpenAIError(
            429,
            "rate_limit_exceeded",
            f"Too many requests for this key; retry in {wait:.0f} s.",
            "rate_limit",
            {"Retry-After": str(int(wait) + 1)},
        )
    return tenant


@router.get("/v1/models")
async def models(request: Request) -> JSONResponse:
    """The personas, as OpenAI models: `model` in a chat completion is one of these ids."""
    services = _services(request)
    try:
        await _tenant(request, services)
    except OpenAIError as e:
        return e.response()
    except BackendUnavailableError as e:
        return OpenAIError(503, "backend_unavailable", str(e), "server_error").response()
    data = [
        {"id": p.id, "object": "model", "created": 0, "owned_by": "companion", "name": p.name}
        for p in services.companion.personas.all()
    ]
    return JSONResponse({"object": "list", "data": data})


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    services = _services(request)
    try:
        tenant = await _tenant(request, services)
        chat = await _read_request(request)
        player = _player(request, chat)
        persona = services.companion.personas.get(chat.model)
        text = _last_user_line(chat.messages)
    except OpenAIError as e:
        services.metrics.errors.labels(e.code).inc()
        return e.response()
    except UnknownPersonaError as e:
        return OpenAIError(404, "model_not_found", f"{e} GET /v1/models lists the personas.").response()
    except BackendUnavailableError as e:
        return OpenAIError(503, "backend_unavailable", str(e), "server_error").response()
    turn = _Turn(services, scoped(tenant, player), persona.id, text)
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return StreamingResponse(
            turn.sse(include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        return JSONResponse(await turn.complete())
    except OpenAIError as e:
        services.metrics.errors.labels(e.code).inc()
        return e.response()
    except Exception as e:
        log.exception("chat completion for %s failed", persona.id)
        return OpenAIError(
            500, "internal", f"The reply failed ({type(e).__name__}); try again.", "server_error"
        ).response()


async def _read_request(request: Request) -> ChatRequest:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise OpenAIError(
            413, "request_too_large", f"The request is {len(body)} bytes; the limit is {MAX_BODY_BYTES}."
        )
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise OpenAIError(400, "invalid_request", f"The request is malformed ({problems}).") from e


def _player(request: Request, chat: ChatRequest) -> str:
    player = chat.user or request.headers.get("x-companion-player")
    if not player:
        raise OpenAIError(
            400,
            "missing_user",
            "Name the player in the request's 'user' field (or an X-Companion-Player header): "
            "Companion keeps each player's memories apart.",
        )
    try:
        return _PLAYER_ID.validate_python(player)
    except ValidationError as e:
        raise OpenAIError(
            400, "invalid_user", "The player id may hold letters, digits and _.:@- (1-96 characters)."
        ) from e


def _last_user_line(messages: list[ChatMessage]) -> str:
    last = messages[-1]
    if last.role != "user":
        raise OpenAIError(
            400,
            "invalid_messages",
            f"The last message must be the player's ('user'), not {last.role!r}: Companion answers it.",
        )
    if isinstance(last.content, list):
        if any(p.type != "text" for p in last.content):
            raise OpenAIError(
                400, "unsupported_content", "Only text parts are understood, not images or audio."
            )
        text = "\n".join(p.text or "" for p in last.content)
    else:
        text = last.content or ""
    text = text.strip()
    if not text:
        raise OpenAIError(400, "empty_message", "The last 'user' message has no text.")
    if len(text) > MAX_TEXT_CHARS:
        raise OpenAIError(
            400,
            "text_too_long",
            f"The last message is {len(text)} characters; the limit is {MAX_TEXT_CHARS}.",
        )
    return text


class _Turn:
    """One Companion turn, answered as an OpenAI completion or a stream of chunks."""

    def __init__(self, services: Services, player: str, npc_id: str, text: str):
        self.services, self.player, self.npc_id, self.text = services, player, npc_id, text
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    async def _events(self) -> AsyncIterator:
        """The pipeline's events, with its failures as OpenAIError."""
        try:
            async for event in self.services.companion.pipeline.turn(
                player_id=self.player, npc_id=self.npc_id, text=self.text
            ):
                if event.kind == "token" and self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                    self.services.metrics.ttft.observe(self.first_token_at - self.started)
                yield event
        except BackendUnavailableError as e:
            raise OpenAIError(503, "backend_unavailable", str(e), "server_error") from e
        except EngineUnavailableError as e:
            raise OpenAIError(
                503, "engine_unavailable", f"The NPC cannot answer right now: {e}", "server_error"
            ) from e
        except CompanionError as e:
            raise OpenAIError(
                500, "generation_failed", f"The NPC could not answer: {e}", "server_error"
            ) from e

    def _finish(self, result) -> tuple[str, dict[str, int], dict[str, Any]]:
        metrics, summary = self.services.metrics, result.generation
        metrics.replies.labels(self.npc_id, result.strategy).inc()
        metrics.tokens.inc(summary.n_generated_tokens)
        metrics.reply_seconds.observe(time.perf_counter() - self.started)
        usage = {
            "prompt_tokens": summary.n_prompt_tokens,
            "completion_tokens": summary.n_generated_tokens,
            "total_tokens": summary.n_prompt_tokens + summary.n_generated_tokens,
        }
        finish = "length" if summary.finish_reason == "length" else "stop"
        return finish, usage, reply_metadata(result).model_dump()

    def _chunk(self, delta: dict, finish: str | None = None, **extra) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.npc_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    async def complete(self) -> dict[str, Any]:
        result = None
        async for event in self._events():
            if event.kind == "reply":
                result = event.result
        finish, usage, meta = self._finish(result)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.npc_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
            "companion": meta,
        }

    async def sse(self, include_usage: bool) -> AsyncIterator[str]:
        """Tokens of the first draft as they come; a later draft is not streamed on top of it
        (a client cannot take text back): the last chunk holds the revision instead."""
        yield self._chunk({"role": "assistant", "content": ""})
        streamed, revised = "", False
        try:
            async for event in self._events():
                if event.kind == "restart":
                    revised = True
                elif event.kind == "token" and not revised:
                    streamed += event.text
                    yield self._chunk({"content": event.text})
                elif event.kind == "reply":
                    finish, usage, meta = self._finish(event.result)
                    final = event.result.text
                    if not revised and final.startswith(streamed.strip()) and final != streamed.strip():
                        yield self._chunk({"content": final[len(streamed.strip()) :]})  # an added close
                    revised = revised or not final.startswith(streamed.strip())
                    companion = {**meta, "revised": revised, "text": final}
                    yield self._chunk({}, finish, companion=companion)
                    if include_usage:
                        yield f"data: {json.dumps({**self._usage_head(), 'choices': [], 'usage': usage})}\n\n"
        except OpenAIError as e:
            self.services.metrics.errors.labels(e.code).inc()
            yield f"data: {json.dumps(e.body())}\n\n"
        except Exception as e:
            log.exception("chat completion %s failed", self.id)
            body = OpenAIError(
                500, "internal", f"The reply failed ({type(e).__name__}); try again.", "server_error"
            )
            yield f"data: {json.dumps(body.body())}\n\n"
        yield "data: [DONE]\n\n"

    def _usage_head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.npc_id,
        }
