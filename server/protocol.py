"""WebSocket protocol v1: the wire messages, their limits, and frame parsing.

Every frame is one JSON object with a `type`. Client messages are validated here, where
they enter; a bad frame becomes a `ProtocolError` with a code and a message that says
what came and what was expected (see PROTOCOL.md for the codes). The JSON Schemas in
`server/schemas/` are written from these models by `python -m server.protocol`.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from server.errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 16 * 1024  # larger frames get a `frame_too_large` error, the socket stays open
TRANSPORT_MAX_BYTES = 1024 * 1024  # larger still: the WebSocket layer closes with 1009
MAX_TEXT_CHARS = 2000
MAX_GAME_EVENT_CHARS = 500
SCHEMA_DIR = Path(__file__).parent / "schemas"

PlayerId = Annotated[str, Field(min_length=1, max_length=96, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
NpcId = Annotated[str, Field(min_length=1, max_length=64)]
MessageId = Annotated[str, Field(min_length=1, max_length=64)]
GameTime = Annotated[str, Field(max_length=64)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- client -> server -------------------------------------------------------------------


class Hello(_Message):
    """Opens a conversation between one player and one NPC; must come first."""

    type: Literal["hello"]
    v: Literal[1] = Field(1, description="Protocol version; this server speaks 1.")
    token: str = Field(min_length=1, max_length=256, description="The game server's API key.")
    player_id: PlayerId = Field(description="The player, as the game names them; scoped under the API key.")
    npc_id: NpcId = Field(description="The persona id of the NPC (GET /v1/personas lists them).")
    session_id: str | None = Field(
        None, max_length=64, description="A session id from an earlier `ready`, to resume that conversation."
    )
    game_time: GameTime | None = None
    subscribe: list[Literal["memory"]] = Field(
        default_factory=list, description='["memory"]: send a `memory` message when an event is written.'
    )


class Say(_Message):
    """What the player says; answered by `token` messages and one `reply`."""

    type: Literal["say"]
    id: MessageId = Field(description="The client's id for this line; replies carry it as `reply_to`.")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    game_time: GameTime | None = None


class GameEvent(_Message):
    """Something that happened in the game that the NPC saw; it shapes the next reply. No answer."""

    type: Literal["game_event"]
    id: MessageId | None = None
    text: str = Field(min_length=1, max_length=MAX_GAME_EVENT_CHARS, examples=["The player gave you a rose."])
    game_time: GameTime | None = None


class Ping(_Message):
    type: Literal["ping"]
    id: MessageId | None = None


class Bye(_Message):
    """Ends the conversation; the server closes the socket with 1000. The session can be resumed."""

    type: Literal["bye"]


ClientMessage = Annotated[Hello | Say | GameEvent | Ping | Bye, Field(discriminator="type")]
CLIENT_TYPES: dict[str, type[_Message]] = {
    "hello": Hello,
    "say": Say,
    "game_event": GameEvent,
    "ping": Ping,
    "bye": Bye,
}
_client_adapter: TypeAdapter = TypeAdapter(ClientMessage)


# ---- server -> client -------------------------------------------------------------------


class PersonaInfo(_Message):
    id: str
    name: str
    first_message: str


class HistoryLine(_Message):
    role: Literal["player", "npc"]
    text: str


class Limits(_Message):
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_text_chars: int = MAX_TEXT_CHARS
    max_game_event_chars: int = MAX_GAME_EVENT_CHARS


class Ready(_Message):
    """The answer to `hello`: the session, the persona, and (when resumed) the recent turns."""

    type: Literal["ready"] = "ready"
    v: Literal[1] = PROTOCOL_VERSION
    session_id: str
    resumed: bool
    player_id: str
    npc_id: str
    persona: PersonaInfo
    history: list[HistoryLine] = Field(default_factory=list, description="Recent turns, oldest first.")
    limits: Limits = Field(default_factory=Limits)


class Token(_Message):
    """A streamed text delta of the reply to `reply_to`.

    `attempt` starts at 1. When it rises, the post-check rejected the draft streamed so
    far: discard the text shown for the earlier attempt; a corrected draft follows.
    """

    type: Literal["token"] = "token"
    reply_to: str
    text: str
    attempt: int = Field(1, ge=1)


class MemoryRef(_Message):
    id: str
    type: str
    content: str


class ReplyMetadata(_Message):
    strategy: str = Field(description="The reflection decision: answer, support, recall or refuse.")
    emotion: str = Field(
        description="The player's emotion as read: neutral, joy, sadness, distress or anger."
    )
    refused: bool
    memories_used: list[MemoryRef]
    regenerated: bool
    flags: list[str] = Field(description="Post-check findings on the last draft.")
    fallbacks: list[str] = Field(description="In-character repairs applied to the last draft.")


def reply_metadata(result) -> ReplyMetadata:
    """The wire form of a finished turn's metadata (`companion.pipeline.TurnResult`)."""
    recalled = {c.event_id: c for c in result.decision.recall}
    meta = result.metadata()
    return ReplyMetadata(
        strategy=meta["strategy"],
        emotion=meta["emotion"],
        refused=meta["refused"],
        memories_used=[
            MemoryRef(id=i, type=recalled[i].type, content=recalled[i].content)
            for i in result.memories_used
            if i in recalled
        ],
        regenerated=meta["regenerated"],
        flags=meta["flags"],
        fallbacks=meta["fallbacks"],
    )


class Usage(_Message):
    tokens: int
    time_to_first_token_ms: float | None
    total_ms: float


class Reply(_Message):
    """The final reply: the authoritative text (it may differ from the streamed tokens) and metadata."""

    type: Literal["reply"] = "reply"
    reply_to: str
    text: str
    metadata: ReplyMetadata
    usage: Usage


class MemoryEventInfo(_Message):
    id: str
    type: str
    content: str
    importance: int
    mentions: int

    @classmethod
    def of(cls, event) -> MemoryEventInfo:
        """From a stored `memory.events.MemoryEvent`."""
        return cls(
            id=event.id,
            type=str(event.type),
            content=event.content,
            importance=event.importance,
            mentions=event.mention_count,
        )


class MemoryEventRecord(MemoryEventInfo):
    """A stored event as REST shows it: the socket's fields and where it stands."""

    npc_id: str
    player_id: str = Field(description="As the game names the player (not scoped under the key).")
    active: bool
    superseded_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, event, player_id: str) -> MemoryEventRecord:  # type: ignore[override]
        return cls(
            **MemoryEventInfo.of(event).model_dump(),
            npc_id=event.npc_id,
            player_id=player_id,
            active=event.active,
            superseded_by=event.superseded_by,
            created_at=event.created_at,
            updated_at=event.updated_at,
        )


class MemoryList(BaseModel):
    """`GET /v1/players/{player_id}/memories`."""

    player_id: str
    npc_id: str | None
    events: list[MemoryEventRecord]


class DeleteResult(BaseModel):
    """`DELETE /v1/players/{player_id}/memories`."""

    player_id: str
    npc_id: str | None
    deleted_events: int
    purged_jobs: int
    deleted_sessions: int


class MemoryNote(_Message):
    """An event about this player and NPC was written (sent only after subscribe: ["memory"])."""

    type: Literal["memory"] = "memory"
    action: Literal["created", "merged", "superseded"]
    event: MemoryEventInfo
    replaced: str | None = None


class ErrorMessage(_Message):
    """Something was wrong; unless `fatal`, the socket stays open and usable."""

    type: Literal["error"] = "error"
    code: str
    message: str
    reply_to: str | None = None
    fatal: bool = False
    retry_after_s: float | None = None


class Pong(_Message):
    type: Literal["pong"] = "pong"
    reply_to: str | None = None


SERVER_TYPES: dict[str, type[_Message]] = {
    "ready": Ready,
    "token": Token,
    "reply": Reply,
    "memory": MemoryNote,
    "error": ErrorMessage,
    "pong": Pong,
}


def parse_frame(raw: str | bytes | None) -> Hello | Say | GameEvent | Ping | Bye:
    """One client frame -> its message.

    Raises:
        ProtocolError: frame_too_large, bad_json, bad_message or unknown_type, with a
            message that names the field at fault.
    """
    if raw is None:
        raise ProtocolError("bad_json", "Empty frame; send one JSON object per text frame.")
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8"))
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large",
            f"The frame is {size} bytes; the limit is {MAX_FRAME_BYTES}. Send shorter text.",
        )
    if isinstance(raw, bytes):
        raise ProtocolError(
            "bad_message", "Binary frames are not part of protocol v1; send each message as a text frame."
        )
    try:
        data = json.loads(raw)
    except RecursionError as e:
        raise ProtocolError(
            "bad_json", "The frame's JSON is nested too deeply to read; send a flat JSON object."
        ) from e
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, and numbers over the digit limit
        raise ProtocolError("bad_json", f"The frame is not valid JSON ({e}); send one JSON object.") from e
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError(
            "bad_message", 'Expected a JSON object with a string "type", e.g. {"type": "ping"}.'
        )
    if data["type"] not in CLIENT_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"Unknown message type {data['type']!r}; expected one of {', '.join(CLIENT_TYPES)}.",
        )
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as e:
        raise ProtocolError("bad_message", _describe(data["type"], e)) from e


def _describe(kind: str, error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        field = ".".join(str(p) for p in item["loc"][1:]) or "(message)"
        parts.append(f"{field}: {item['msg']}")
    return f"Invalid {kind!r} message: " + "; ".join(parts) + ". See GET /v1/protocol for the schema."


def schemas() -> dict[str, dict[str, Any]]:
    """Schema file name -> JSON Schema, for every message in both directions."""
    out = {}
    for direction, types in (("client", CLIENT_TYPES), ("server", SERVER_TYPES)):
        for name, model in types.items():
            schema = model.model_json_schema()
            schema["$id"] = f"companion/protocol/v{PROTOCOL_VERSION}/{direction}.{name}.json"
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            out[f"{direction}.{name}.json"] = schema
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m server.protocol: regenerate server/schemas/
    for path in write_schemas():
        sys.stdout.write(f"wrote {path}\n")
