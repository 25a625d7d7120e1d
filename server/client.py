"""An async Python client for protocol v1.

Example:
    async with await CompanionClient.connect(
        "ws://localhost:8000/v1/ws", token="...", player_id="p1", npc_id="mira"
    ) as npc:
        async for frame in npc.say("I've been craving hotpot."):
            if frame.type == "token":
                print(frame.text, end="", flush=True)
        print(npc.last_reply.metadata.strategy)

`say` yields `Token` frames and ends with the `Reply`; an `error` frame for that line
raises `CompanionServerError`. `memory` frames (with subscribe_memory=True) collect in
`memories`. The session id of `ready` resumes the conversation on a new connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

from pydantic import TypeAdapter
from websockets.asyncio.client import ClientConnection, connect

from server.protocol import ErrorMessage, MemoryNote, Pong, Ready, Reply, Token

_frames = TypeAdapter(Ready | Token | Reply | MemoryNote | ErrorMessage | Pong)


class CompanionServerError(Exception):
    """The server answered with an `error` frame."""

    def __init__(self, error: ErrorMessage):
        super().__init__(f"{error.code}: {error.message}")
        self.error = error
        self.code = error.code


class CompanionClient:
    def __init__(self, ws: ClientConnection, ready: Ready):
        self.ws, self.ready = ws, ready
        self.memories: list[MemoryNote] = []
        self.last_reply: Reply | None = None
        self._ids = itertools.count(1)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str,
        player_id: str,
        npc_id: str,
        session_id: str | None = None,
        game_time: str | None = None,
        subscribe_memory: bool = False,
        open_timeout: float = 10.0,
    ) -> CompanionClient:
        """Opens the socket and says hello.

        Raises:
            CompanionServerError: the hello was refused (unknown persona, bad session, bad key).
        """
        ws = await connect(url, open_timeout=open_timeout, max_size=2**20)
        hello = {"type": "hello", "token": token, "player_id": player_id, "npc_id": npc_id}
        if session_id:
            hello["session_id"] = session_id
        if game_time:
            hello["game_time"] = game_time
        if subscribe_memory:
            hello["subscribe"] = ["memory"]
        await ws.send(_dumps(hello))
        frame = await cls._next(ws)
        if isinstance(frame, ErrorMessage):
            await ws.close()
            raise CompanionServerError(frame)
        return cls(ws, frame)

    @property
    def session_id(self) -> str:
        return self.ready.session_id

    async def say(self, text: str, *, game_time: str | None = None) -> AsyncIterator[Token | Reply]:
        """Streams the reply to `text`: tokens, then the reply (also kept in `last_reply`)."""
        msg_id = f"c{next(self._ids)}"
        message = {"type": "say", "id": msg_id, "text": text}
        if game_time:
            message["game_time"] = game_time
        await self.ws.send(_dumps(message))
        while True:
            frame = await self._next(self.ws)
            if isinstance(frame, MemoryNote):
                self.memories.append(frame)
            elif isinstance(frame, ErrorMessage) and frame.reply_to in (msg_id, None):
                raise CompanionServerError(frame)
            elif isinstance(frame, Token) and frame.reply_to == msg_id:
                yield frame
            elif isinstance(frame, Reply) and frame.reply_to == msg_id:
                self.last_reply = frame
                yield frame
                return

    async def reply(self, text: str, **kwargs) -> Reply:
        """Says `text` and returns only the final reply."""
        async for _ in self.say(text, **kwargs):
            pass
        return self.last_reply

    async def game_event(self, text: str) -> None:
        await self.ws.send(_dumps({"type": "game_event", "text": text}))

    async def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time in seconds."""
        loop = asyncio.get_running_loop()
        started, msg_id = loop.time(), f"p{next(self._ids)}"
        await self.ws.send(_dumps({"type": "ping", "id": msg_id}))
        while True:
            frame = await asyncio.wait_for(self._next(self.ws), timeout)
            if isinstance(frame, Pong) and frame.reply_to == msg_id:
                return loop.time() - started
            if isinstance(frame, MemoryNote):
                self.memories.append(frame)

    async def close(self) -> None:
        try:
            await self.ws.send(_dumps({"type": "bye"}))
        finally:
            await self.ws.close()

    async def __aenter__(self) -> CompanionClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @staticmethod
    async def _next(ws: ClientConnection):
        return _frames.validate_json(await ws.recv())


def _dumps(message: dict) -> str:
    return json.dumps(message)
