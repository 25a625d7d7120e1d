"""REST routes: personas, a player's memories, health, metrics, the protocol's schemas, the demo page.

Player routes take the game server's API key as `Authorization: Bearer <key>`; a player
id is looked up under that key only, so one key never reaches another key's players.
Errors are `{"detail": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from persona_adapters.errors import UnknownPersonaError
from server.errors import BackendUnavailableError
from server.protocol import (
    MAX_FRAME_BYTES,
    MAX_TEXT_CHARS,
    PROTOCOL_VERSION,
    DeleteResult,
    MemoryEventRecord,
    MemoryList,
    PlayerId,
    schemas,
)
from server.services import Services, scoped
from server.websocket import CLOSE_UNAUTHORIZED

log = logging.getLogger(__name__)
router = APIRouter()
STATIC_DIR = FilePath(__file__).parent / "static"


def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]


def _fail(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status, detail={"code": code, "message": message})


async def _tenant(services: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> str:
    tenant = services.tenant_of_header(authorization)
    if tenant is None:
        raise _fail(
            401, "unauthorized", "Send 'Authorization: Bearer <API key>' with a key from COMPANION_API_KEYS."
        )
    try:
        wait = await services.limiter.hit(tenant)
    except BackendUnavailableError as e:
        raise _fail(503, "backend_unavailable", str(e)) from e
    if wait is not None:
        raise HTTPException(
            429,
            detail={
                "code": "rate_limited",
                "message": f"Too many requests for this key; retry in {wait:.0f} s.",
            },
            headers={"Retry-After": str(int(wait) + 1)},
        )
    return tenant


TenantDep = Annotated[str, Depends(_tenant)]
PlayerPath = Annotated[PlayerId, Path(description="The player id the game uses in `hello`.")]
NpcQuery = Annotated[str | None, Query(description="Only this NPC's memories; all NPCs when absent.")]


@router.get("/", include_in_schema=False)
async def demo_page(services: ServicesDep) -> FileResponse:
    if not services.settings.demo:
        raise _fail(404, "demo_disabled", "The web demo is off (COMPANION_DEMO=false).")
    return FileResponse(STATIC_DIR / "index.html")


@router.get("/demo/config", include_in_schema=False)
async def demo_config(services: ServicesDep) -> dict[str, Any]:
    """The demo page's key: served only with the demo on (loopback by default)."""
    if not services.settings.demo:
        raise _fail(404, "demo_disabled", "The web demo is off (COMPANION_DEMO=false).")
    return {"token": services.demo_token, "ws_path": "/v1/ws", "protocol": PROTOCOL_VERSION}


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    backbone = services.companion.backbone
    engine = await backbone.health()
    services.metrics.engine_up.set(1 if engine.ok else 0)
    checks: dict[str, Any] = {
        "engine": backbone.kind,
        "engine_status": "ok" if engine.ok else f"unavailable: {engine.detail}",
        "model": getattr(backbone, "source", None),  # not info(): hf's sums every parameter
    }
    ok = engine.ok
    if services.redis is None:
        checks["redis"] = "not configured (in-process)"
    else:
        try:
            await asyncio.wait_for(_redis_round_trip(services), 2)
            checks["redis"] = "ok"
        except Exception as e:
            checks["redis"], ok = f"unreachable: {e}", False
    problem = services.companion.writer.health()
    checks["memory_writer"] = "ok" if problem is None else problem
    ok = ok and problem is None
    try:
        await asyncio.wait_for(asyncio.to_thread(services.companion.store.heartbeat), 5)
        checks["chroma"] = "ok"
    except Exception as e:
        checks["chroma"], ok = f"unreachable: {e}", False
    return JSONResponse({"status": "ok" if ok else "degraded", **checks}, status_code=200 if ok else 503)


async def _redis_round_trip(services: Services) -> None:
    """A write and a read on the connection pool the routes use, not just a ping."""
    key, token = f"companion:health:{services.settings.worker_name}", secrets.token_hex(8)
    await services.redis.set(key, token, px=10_000)
    if await services.redis.get(key) != token:
        raise RuntimeError("a value written was not read back")


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/protocol")
async def protocol() -> dict[str, Any]:
    return {
        "version": PROTOCOL_VERSION,
        "websocket": "/v1/ws",
        "limits": {"max_frame_bytes": MAX_FRAME_BYTES, "max_text_chars": MAX_TEXT_CHARS},
        "close_codes": {"1000": "bye", str(CLOSE_UNAUTHORIZED): "unauthorized (bad or missing API key)"},
        "schemas": {name: f"/v1/protocol/schemas/{name}" for name in schemas()},
    }


@router.get("/v1/protocol/schemas/{name}")
async def protocol_schema(name: str) -> dict[str, Any]:
    found = schemas().get(name)
    if found is None:
        raise _fail(404, "unknown_schema", f"No schema {name!r}; GET /v1/protocol lists them.")
    return found


@router.get("/v1/personas")
async def personas(services: ServicesDep) -> list[dict[str, Any]]:
    return [_persona_summary(p) for p in services.companion.personas.all()]


@router.get("/v1/personas/{persona_id}")
async def persona(persona_id: str, services: ServicesDep) -> dict[str, Any]:
    try:
        found = services.companion.personas.get(persona_id)
    except UnknownPersonaError as e:
        raise _fail(404, "unknown_persona", str(e)) from e
    return {**found.to_dict(), "has_adapter": services.companion.personas.adapter_dir(found.id) is not None}


def _persona_summary(p) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "description": p.description, "first_message": p.first_message}


@router.get("/v1/players/{player_id}/memories")
async def memories(
    player_id: PlayerPath,
    tenant: TenantDep,
    services: ServicesDep,
    npc_id: NpcQuery = None,
    include_superseded: bool = False,
) -> MemoryList:
    events = await services.companion.store.list(
        player_id=scoped(tenant, player_id), npc_id=npc_id, include_superseded=include_superseded
    )
    return MemoryList(
        player_id=player_id, npc_id=npc_id, events=[MemoryEventRecord.of(e, player_id) for e in events]
    )


@router.get("/v1/players/{player_id}/memories/export")
async def export_memories(
    player_id: PlayerPath, tenant: TenantDep, services: ServicesDep, npc_id: NpcQuery = None
) -> JSONResponse:
    data = await services.companion.store.export(player_id=scoped(tenant, player_id), npc_id=npc_id)
    data["player_id"] = player_id
    for event in data["events"]:
        event["player_id"] = player_id
    return JSONResponse(
        data, headers={"Content-Disposition": f'attachment; filename="{player_id}-memories.json"'}
    )


@router.delete("/v1/players/{player_id}/memories")
async def delete_memories(
    player_id: PlayerPath, tenant: TenantDep, services: ServicesDep, npc_id: NpcQuery = None
) -> DeleteResult:
    """Hard delete: events and embeddings, queued writes, short-term buffers (and sessions, for all NPCs)."""
    companion, player = services.companion, scoped(tenant, player_id)
    try:
        # first: any turn of this player still in flight (streaming, queued) is then never written
        await companion.erasures.record(player_id=player, npc_id=npc_id)
        purged = await companion.writer.purge(player)
        deleted = await companion.store.delete(player_id=player, npc_id=npc_id)
        await companion.buffer.clear(player_id=player, npc_id=npc_id)
        sessions = 0 if npc_id else await services.sessions.delete_player(tenant=tenant, player_id=player_id)
    except BackendUnavailableError as e:
        raise _fail(503, "backend_unavailable", str(e)) from e
    log.info("hard delete of %s (npc %s): %d events", player, npc_id or "all", deleted)
    return DeleteResult(
        player_id=player_id,
        npc_id=npc_id,
        deleted_events=deleted,
        purged_jobs=purged,
        deleted_sessions=sessions,
    )
