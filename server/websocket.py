"""The WebSocket endpoint of protocol v1 (PROTOCOL.md), on an explicit state machine.

One `Connection` per socket. Frames are read in one loop; a `say` starts the reply in a
task, so `ping` is answered and a second `say` gets a `busy` error while tokens stream.
Only an authentication failure closes the socket (code 4401); every other error is an
`error` message and the socket stays usable.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from companion.errors import CompanionError, EngineUnavailableError
from memory.consolidation import MemoryWrite
from persona_adapters.errors import UnknownPersonaError
from server.errors import BackendUnavailableError, ProtocolError
from server.protocol import (
    Bye,
    ErrorMessage,
    GameEvent,
    Hello,
    HistoryLine,
    MemoryEventInfo,
    MemoryNote,
    PersonaInfo,
    Ping,
    Pong,
    Ready,
    Reply,
    Say,
    Token,
    Usage,
    parse_frame,
    reply_metadata,
)
from server.services import Services, scoped
from server.sessions import SessionRecord

log = logging.getLogger(__name__)
router = APIRouter()
CLOSE_UNAUTHORIZED = 4401
CLOSE_HELLO_TIMEOUT = 4408


class State(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    READY = "ready"
    REPLYING = "replying"
    CLOSED = "closed"


@router.websocket("/v1/ws")
async def conversation(ws: WebSocket) -> None:
    await ws.accept()
    services: Services = ws.app.state.services
    services.metrics.connections.inc()
    await Connection(ws, services).run()


class Connection:
    def __init__(self, ws: WebSocket, services: Services):
        self.ws, self.services = ws, services
        self.state = State.AWAITING_HELLO
        self.session: SessionRecord | None = None
        self.player: str = ""  # scoped player id
        self.persona = None
        self._send_lock = asyncio.Lock()
        self._reply_task: asyncio.Task | None = None
        self._unsubscribe = None
        self._notes: set[asyncio.Task] = set()  # memory notes being sent (kept referenced until done)

    async def run(self) -> None:
        hello_by = time.monotonic() + self.services.settings.hello_timeout_s
        try:
            while self.state is not State.CLOSED:
                try:
                    frame = await self._receive(hello_by)
                except TimeoutError:
                    await self.error(
                        "hello_timeout",
                        f"No 'hello' within {self.services.settings.hello_timeout_s:g} s of connecting; "
                        "send 'hello' first on a new socket.",
                        fatal=True,
                    )
                    await self.close(CLOSE_HELLO_TIMEOUT, "hello timeout")
                    break
                if frame["type"] == "websocket.disconnect":
                    break
                await self.handle(frame.get("text") if frame.get("text") is not None else frame.get("bytes"))
        except WebSocketDisconnect:
            pass
        finally:
            self.state = State.CLOSED
            if self._reply_task is not None:
                self._reply_task.cancel()
                await asyncio.gather(self._reply_task, return_exceptions=True)
            if self._unsubscribe is not None:
                self._unsubscribe()

    async def _receive(self, hello_by: float) -> dict:
        """The next frame; before `hello`, only until `hello_by` (pings do not extend it)."""
        if self.state is not State.AWAITING_HELLO:
            return await self.ws.receive()
        return await asyncio.wait_for(self.ws.receive(), timeout=max(0.0, hello_by - time.monotonic()))

    async def handle(self, raw: str | bytes | None) -> None:
        try:
            message = parse_frame(raw)
        except ProtocolError as e:
            await self.error(e.code, e.message)
            return
        if isinstance(message, Ping):
            await self.send(Pong(reply_to=message.id))
        elif isinstance(message, Hello):
            await self.hello(message)
        elif isinstance(message, Bye):
            await self.bye()
        elif self.state is State.AWAITING_HELLO:
            await self.error(
                "not_ready",
                f"Send 'hello' first; a '{message.type}' needs a conversation.",
                reply_to=getattr(message, "id", None),
            )
        elif isinstance(message, Say):
            await self.say(message)
        elif isinstance(message, GameEvent):
            await self.game_event(message)

    async def hello(self, hello: Hello) -> None:
        if self.state is not State.AWAITING_HELLO:
            await self.error(
                "already_ready", "This socket already has a conversation; open a new socket for another."
            )
            return
        tenant = self.services.tenant_of(hello.token)
        if tenant is None:
            await self.error(
                "unauthorized", "The token is not a known API key; check COMPANION_API_KEYS.", fatal=True
            )
            await self.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        try:
            persona = self.services.companion.personas.get(hello.npc_id)
        except UnknownPersonaError as e:
            await self.error("unknown_persona", str(e))
            return
        try:
            session = await self._session(hello, tenant)
        except BackendUnavailableError as e:
            await self.error("backend_unavailable", str(e))
            return
        if session is None:
            return
        self.session, self.persona, self.player = session, persona, scoped(tenant, hello.player_id)
        resumed = hello.session_id is not None
        history = []
        if resumed and self.services.settings.history_on_resume:
            buffered = await self.services.companion.buffer.recent(
                player_id=self.player, npc_id=persona.id, n=self.services.settings.history_on_resume
            )
            history = [HistoryLine(role=b.turn.role, text=b.turn.text) for b in buffered]
        if "memory" in hello.subscribe:
            self._unsubscribe = self.services.feed.subscribe(self.player, persona.id, self._on_written)
        self.state = State.READY
        await self.send(
            Ready(
                session_id=session.session_id,
                resumed=resumed,
                player_id=hello.player_id,
                npc_id=persona.id,
                persona=PersonaInfo(id=persona.id, name=persona.name, first_message=persona.first_message),
                history=history,
            )
        )

    async def _session(self, hello: Hello, tenant: str) -> SessionRecord | None:
        sessions = self.services.sessions
        if hello.session_id is None:
            record = SessionRecord(tenant=tenant, player_id=hello.player_id, npc_id=hello.npc_id)
            await sessions.put(record)
            return record
        record = await sessions.get(hello.session_id)
        if record is None:
            await self.error(
                "unknown_session",
                f"No session {hello.session_id!r} (it expired or its player was deleted); "
                "send hello without session_id to start a new one.",
            )
            return None
        if (record.tenant, record.player_id, record.npc_id) != (tenant, hello.player_id, hello.npc_id):
            await self.error(
                "session_mismatch",
                "That session belongs to another player, NPC or key; resume it with the same "
                "player_id and npc_id, or start a new session.",
            )
            return None
        return record

    async def say(self, say: Say) -> None:
        if self.state is State.REPLYING:
            await self.error(
                "busy",
                "A reply is still streaming; wait for its 'reply' before the next 'say'.",
                reply_to=say.id,
            )
            return
        if not await self._allowed(say.id):
            return
        self.state = State.REPLYING
        self._reply_task = asyncio.create_task(self._reply(say, time.perf_counter()))

    async def _reply(self, say: Say, started: float) -> None:
        services, first_token_at = self.services, None
        world: list[str] = []
        try:
            world = await services.sessions.take_world(self.session.session_id)
            async for event in services.companion.pipeline.turn(
                player_id=self.player,
                npc_id=self.persona.id,
                text=say.text,
                game_time=say.game_time,
                world=world,
            ):
                if event.kind == "token":
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                        services.metrics.ttft.observe(first_token_at - started)
                    await self.send(Token(reply_to=say.id, text=event.text, attempt=event.attempt))
                elif event.kind == "reply":
                    await self.send(self._reply_message(say, event.result, started, first_token_at))
        except asyncio.CancelledError:
            raise
        except BackendUnavailableError as e:
            await self._restore_world(world)
            await self.error("backend_unavailable", str(e), reply_to=say.id)
        except EngineUnavailableError as e:
            await self._restore_world(world)
            await self.error("engine_unavailable", f"The NPC cannot answer right now: {e}", reply_to=say.id)
        except CompanionError as e:
            await self._restore_world(world)
            await self.error("generation_failed", f"The NPC could not answer: {e}", reply_to=say.id)
        except Exception as e:
            log.exception("reply to %s failed", say.id)
            await self._restore_world(world)
            await self.error(
                "internal", f"The reply failed ({type(e).__name__}); try again.", reply_to=say.id
            )
        finally:
            if self.state is State.REPLYING:
                self.state = State.READY

    def _reply_message(self, say: Say, result, started: float, first_token_at: float | None) -> Reply:
        services = self.services
        now = time.perf_counter()
        n_tokens = result.generation.n_generated_tokens
        services.metrics.replies.labels(self.persona.id, result.strategy).inc()
        services.metrics.tokens.inc(n_tokens)
        services.metrics.reply_seconds.observe(now - started)
        return Reply(
            reply_to=say.id,
            text=result.text,
            metadata=reply_metadata(result),
            usage=Usage(
                tokens=n_tokens,
                time_to_first_token_ms=None if first_token_at is None else 1000 * (first_token_at - started),
                total_ms=1000 * (now - started),
            ),
        )

    async def _restore_world(self, world: list[str]) -> None:
        for text in world:  # the failed reply did not see them; the next one should
            try:
                await self.services.sessions.push_world(self.session.session_id, text)
            except BackendUnavailableError:
                log.warning("game event lost with Redis down: %r", text)

    async def game_event(self, event: GameEvent) -> None:
        if not await self._allowed(event.id):
            return
        try:
            await self.services.sessions.push_world(self.session.session_id, event.text)
        except BackendUnavailableError as e:
            await self.error("backend_unavailable", str(e), reply_to=event.id)

    async def _allowed(self, message_id: str | None) -> bool:
        try:
            wait = await self.services.limiter.hit(self.session.tenant)
        except BackendUnavailableError as e:
            await self.error("backend_unavailable", str(e), reply_to=message_id)
            return False
        if wait is None:
            return True
        await self.error(
            "rate_limited",
            f"This API key sent more than {self.services.settings.rate_limit_per_minute} messages this "
            f"minute; retry in {wait:.0f} s.",
            reply_to=message_id,
            retry_after_s=round(wait, 1),
        )
        return False

    async def bye(self) -> None:
        if self._reply_task is not None:
            self._reply_task.cancel()
        await self.close(1000, "bye")

    def _on_written(self, writes: list[MemoryWrite]) -> None:
        for write in writes:
            if write.action == "unchanged":
                continue
            note = MemoryNote(
                action=write.action, replaced=write.replaced, event=MemoryEventInfo.of(write.event)
            )
            task = asyncio.get_running_loop().create_task(self.send(note))
            self._notes.add(task)
            task.add_done_callback(self._notes.discard)

    async def error(self, code: str, message: str, **fields) -> None:
        self.services.metrics.errors.labels(code).inc()
        await self.send(ErrorMessage(code=code, message=message, **fields))

    async def send(self, message) -> None:
        if self.state is State.CLOSED and not isinstance(message, ErrorMessage):
            return
        async with self._send_lock:
            if self.ws.application_state is WebSocketState.CONNECTED:
                try:
                    await self.ws.send_text(message.model_dump_json())
                except (WebSocketDisconnect, RuntimeError):
                    self.state = State.CLOSED

    async def close(self, code: int, reason: str) -> None:
        self.state = State.CLOSED
        async with self._send_lock:
            if self.ws.application_state is WebSocketState.CONNECTED:
                await self.ws.close(code=code, reason=reason)
