"""Consolidation: how a new fact meets the facts already stored (merge, supersede, or a
no-op for turns already written), and how an event sits in a Chroma record."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from memory.config import MemoryConfig
from memory.events import EventDraft, MemoryEvent, Turn, said_in, utcnow

WriteAction = Literal["created", "merged", "superseded", "unchanged"]


@dataclass(frozen=True)
class MemoryWrite:
    """What `add` did with one draft.

    Attributes:
        event: the event as stored now (the merged one for "merged").
        action: "created", "merged" (same fact told again: mention count rose),
            "superseded" (a changed fact replaced `replaced`), or "unchanged" (these
            turns were already written: a retried write is a no-op).
        replaced: the id of the superseded event, for "superseded".
    """

    event: MemoryEvent
    action: WriteAction
    replaced: str | None = None


def write_one(
    collection,
    draft: EventDraft,
    vector,
    *,
    player_id: str,
    npc_id: str,
    turns: list[Turn],
    config: MemoryConfig,
    said_vector=None,
) -> MemoryWrite:
    """Writes one draft into the player-NPC collection, consolidating with what is there:
    the same turns again change nothing, a near-identical fact of the same type is merged
    (its mention count rises), a fact in the same slot supersedes the active one.

    `said_vector` is the embedding of the player's words in `turns` (`MemoryEvent.said`); a new
    event keeps it beside its own vector, a merged one keeps the words it was first told in.
    """
    event_id = stable_id(player_id, npc_id, draft, turns)
    found = collection.get(ids=[event_id], include=["metadatas"])
    if found["ids"]:
        return MemoryWrite(event_of(found["metadatas"][0]), "unchanged")
    now = max((t.at for t in turns), default=None) or utcnow()
    turn_ids = [t.id for t in turns]
    duplicate = nearest_active(collection, vector, event_type=draft.type)
    if duplicate is not None and duplicate[1] >= config.duplicate_similarity:
        old = duplicate[0]
        if turn_ids and set(turn_ids) <= set(old.source_turn_ids):
            return MemoryWrite(old, "unchanged")
        merged = old.model_copy(
            update={
                "mention_count": old.mention_count + 1,
                "updated_at": max(now, old.updated_at),
                "importance": max(old.importance, draft.importance),
                "source_turn_ids": old.source_turn_ids
                + [t for t in turn_ids if t not in old.source_turn_ids],
                "said": said_in(turns, before=old.said),
            }
        )
        collection.update(ids=[merged.id], metadatas=[event_metadata(merged)])
        return MemoryWrite(merged, "merged")
    event = MemoryEvent.from_draft(draft, player_id=player_id, npc_id=npc_id, turns=turns, id=event_id)
    previous = active_in_slot(collection, draft.slot) if draft.slot else None
    if previous is not None:
        event = event.model_copy(update={"supersedes": previous.id})
        retired = previous.model_copy(
            update={"superseded_by": event.id, "updated_at": max(now, previous.updated_at)}
        )
        collection.update(ids=[retired.id], metadatas=[event_metadata(retired)])
    metadata = event_metadata(event)
    if said_vector is not None:
        metadata[SAID_VECTOR] = encode_vector(said_vector)
    collection.add(ids=[event.id], embeddings=[vector], metadatas=[metadata])
    if previous is not None:
        return MemoryWrite(event, "superseded", replaced=previous.id)
    return MemoryWrite(event, "created")


def nearest_active(collection, vector, *, event_type: str) -> tuple[MemoryEvent, float] | None:
    where = {"$and": [{"type": str(event_type)}, {"active": True}]}
    result = collection.query(
        query_embeddings=[vector], n_results=1, where=where, include=["metadatas", "distances"]
    )
    if not result["ids"][0]:
        return None
    return event_of(result["metadatas"][0][0]), 1.0 - result["distances"][0][0]


def active_in_slot(collection, slot: str) -> MemoryEvent | None:
    where = {"$and": [{"slot": slot}, {"active": True}]}
    found = collection.get(where=where, include=["metadatas"])
    events = sorted((event_of(m) for m in found["metadatas"]), key=lambda e: e.updated_at)
    return events[-1] if events else None


def events_in(collections, *, include_superseded: bool) -> list[MemoryEvent]:
    """Every event of `collections`, oldest first."""
    events = []
    for collection in collections:
        found = collection.get(include=["metadatas"])
        events += [event_of(m) for m in found["metadatas"] if include_superseded or m["active"]]
    return sorted(events, key=lambda e: (e.created_at, e.id))


def stable_id(player_id: str, npc_id: str, draft: EventDraft, turns: Sequence[Turn]) -> str:
    """The same fact from the same turns always gets the same id (idempotent writes)."""
    turn_part = "|".join(sorted(t.id for t in turns)) if turns else datetime.now(UTC).isoformat()
    key = "\x1f".join([player_id, npc_id, str(draft.type), draft.content, turn_part])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


SAID_VECTOR = "said_vector"  # metadata key: the embedding of the player's words, float16, base64


def encode_vector(vector) -> str:
    return base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode("ascii")


def said_vector_of(metadata: dict[str, Any]) -> np.ndarray | None:
    """The embedding of the words an event came from; None for events stored before it was kept."""
    raw = metadata.get(SAID_VECTOR)
    return np.frombuffer(base64.b64decode(raw), dtype=np.float16).astype(np.float32) if raw else None


def event_metadata(event: MemoryEvent) -> dict[str, Any]:
    return {
        "type": str(event.type),
        "slot": event.slot or "",
        "active": event.active,
        "importance": event.importance,
        "updated_ts": event.updated_at.timestamp(),
        "event": event.model_dump_json(),
    }


def event_of(metadata: dict[str, Any]) -> MemoryEvent:
    return MemoryEvent.model_validate(json.loads(metadata["event"]))
