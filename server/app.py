"""`create_app(settings)`: the FastAPI app. The lifespan loads the backbone once and wires
Redis (when configured) or the in-process parts. Routes: rest.py, websocket.py and
openai_compat.py; what they share (`Services`) is in services.py."""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from companion.assembly import Companion
from companion.backbone import BackboneConfig, GenerationParams
from companion.errors import CompanionError
from companion.protocols import Generator
from server.errors import BackendUnavailableError, ServerError
from server.feed import RedisFeedBridge, WriteFeed
from server.metrics import Metrics
from server.openai_compat import router as openai_router
from server.rate_limit import InProcessRateLimiter, RateLimiter
from server.redis_memory_writer import RedisMemoryWriter
from server.redis_store import (
    RedisBuffer,
    RedisErasureLog,
    RedisRateLimiter,
    RedisSessionStore,
    connect,
    describe,
)
from server.rest import STATIC_DIR
from server.rest import router as rest_router
from server.services import Services
from server.sessions import InProcessSessionStore, SessionStore
from server.settings import ServerSettings, parse_failpoints
from server.websocket import router as websocket_router

log = logging.getLogger(__name__)
DEMO_TENANT = "demo"


def create_app(settings: ServerSettings | None = None, *, backbone: Generator | None = None) -> FastAPI:
    """Builds the app.

    Args:
        settings: runtime settings; read from the environment when None.
        backbone: an already built generator (tests pass a scripted fake or a tiny model);
            the lifespan loads `settings.model` when None.
    """
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            services = await _start(settings, backbone)
        except (CompanionError, ServerError) as e:  # say what went wrong and what to do, then stop
            log.error("Companion could not start: %s", e)
            raise
        app.state.services = services
        log.info("Companion server ready (redis: %s)", describe(settings.redis_url or "in-process"))
        try:
            yield
        finally:
            for close in reversed(services.closers):
                try:
                    await close()
                except Exception:
                    log.exception("error while shutting down")

    app = FastAPI(
        title="Companion",
        version="0.1.0",
        description="NPC companions with persona, memory and empathy. WebSocket protocol v1 at /v1/ws.",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.include_router(rest_router)
    app.include_router(websocket_router)
    app.include_router(openai_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _bad_request(request, exc: RequestValidationError) -> JSONResponse:
    """REST input that fails validation, in the documented error shape (PROTOCOL.md)."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'] if p not in ('query', 'path', 'body'))}: {e['msg']}"
        for e in exc.errors()
    )
    return JSONResponse(
        {"detail": {"code": "bad_request", "message": f"The request is malformed ({problems}); see /docs."}},
        status_code=422,
    )


def build_engine_from(settings: ServerSettings) -> Generator:
    """The engine the settings name, loaded (blocking: call it off the event loop)."""
    from companion.backbone.engines import build_engine
    from companion.backbone.llamacpp_config import LlamaCppConfig
    from companion.backbone.openai_engine import OpenAIEngineConfig

    return build_engine(
        settings.engine,
        hf=BackboneConfig(model=settings.model),
        llamacpp=LlamaCppConfig(
            model=settings.model,
            gguf_type=settings.llamacpp_gguf_type,
            n_lanes=settings.llamacpp_lanes,
            n_slots_per_lane=settings.llamacpp_slots_per_lane,
        ),
        openai=OpenAIEngineConfig(
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            api_key=settings.openai_api_key,
            persona_models=settings.persona_models(),
            timeout_s=settings.openai_timeout_s,
        ),
    )


async def _connect_redis(settings: ServerSettings):
    """A Redis client that answered a ping.

    Raises:
        BackendUnavailableError: REDIS_URL is set and Redis does not answer; the message says what to do.
    """
    redis_client = connect(settings.redis_url)
    try:
        await redis_client.ping()
    except Exception as e:
        await redis_client.aclose()
        raise BackendUnavailableError(
            f"REDIS_URL={describe(settings.redis_url)} is set but Redis does not answer ({e}). "
            "Start redis-server, fix the URL, or unset REDIS_URL to run everything in-process."
        ) from e
    return redis_client


def _redis_parts(settings: ServerSettings, redis_client):
    """The buffer, session store, rate limiter and memory-writer factory on Redis."""
    url = settings.redis_url
    sessions: SessionStore = RedisSessionStore(redis_client, url)
    limiter: RateLimiter = RedisRateLimiter(redis_client, url, settings.rate_limit_per_minute)

    def writer_of(summarizer, store, erasures):
        return RedisMemoryWriter(
            summarizer,
            store,
            redis_client,
            url,
            consumer=settings.worker_name,
            claim_idle_ms=int(1000 * settings.writer_claim_idle_s),
            failpoints=parse_failpoints(settings.failpoints),
            erasures=erasures,
        )

    return RedisBuffer(redis_client, url), sessions, limiter, writer_of


async def _start(settings: ServerSettings, backbone: Generator | None) -> Services:
    keys = settings.key_table()
    demo_token = None
    if settings.demo:
        demo_token = settings.demo_token or secrets.token_urlsafe(18)
        keys = {**keys, demo_token: DEMO_TENANT}
    metrics, feed = Metrics(), WriteFeed()
    closers: list = []
    redis_client = await _connect_redis(settings) if settings.redis_url else None
    if redis_client is not None:
        closers.append(redis_client.aclose)
        buffer, sessions, limiter, writer_of = _redis_parts(settings, redis_client)
        erasures = RedisErasureLog(redis_client, settings.redis_url)
    else:
        buffer, writer_of, erasures = None, None, None
        sessions, limiter = InProcessSessionStore(), InProcessRateLimiter(settings.rate_limit_per_minute)

    params = GenerationParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature)
    if backbone is None:
        backbone = await asyncio.to_thread(build_engine_from, settings)
    metrics.set_engine(backbone.info())
    companion = await asyncio.to_thread(
        Companion.build,
        BackboneConfig(model=settings.model),
        data_dir=settings.data_dir,
        chroma_url=settings.chroma_url,
        params=params,
        buffer=buffer,
        writer_of=writer_of,
        backbone=backbone,
        erasures=erasures,
    )
    closers.append(companion.close)
    writer = companion.writer
    writer.listeners.append(metrics.on_written)
    if redis_client is not None:
        bridge = RedisFeedBridge(redis_client, feed)
        writer.listeners.append(bridge.listener)
        await bridge.start()
        await writer.start()
        closers += [bridge.close, writer.close]
    else:
        writer.listeners.append(feed.publish)
    return Services(
        settings, companion, sessions, limiter, feed, metrics, keys, demo_token, redis_client, closers
    )
