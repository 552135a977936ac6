"""Technician HTTP API of the lane registry (used by `edge lanes ...` and the console).

``GET  /api/v1/lanes``                        every register: state, last contact, alerts
``GET  /api/v1/lanes/{device}``               one register with its transition history
``POST /api/v1/lanes/{device}/enroll``        {"reason"}: enroll a discovered or retired one
``POST /api/v1/lanes/{device}/retire``        {"reason"}: retire it now

Errors are JSON ``{"error": {"code", "message"}}``: 404 unknown device, 409 not allowed in its
state.
"""

from __future__ import annotations

from aiohttp import web

from edge.lanes.lifecycle import LaneStateError
from edge.lanes.registry import LaneRegistry

LANES = web.AppKey("lanes", LaneRegistry)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _list(request: web.Request) -> web.Response:
    registry = request.app[LANES]
    counts = {state.value: n for state, n in registry.counts().items()}
    return web.json_response({"counts": counts, "lanes": registry.snapshot()})


async def _one(request: web.Request) -> web.Response:
    registry = request.app[LANES]
    device = request.match_info["device"]
    found = [row for row in registry.snapshot() if row["device_id"] == device]
    if not found:
        return _error(404, "UNKNOWN_DEVICE", f"no register {device}")
    return web.json_response({**found[0], "history": await registry.history(device)})


async def _action(request: web.Request) -> web.Response:
    registry = request.app[LANES]
    device, action = request.match_info["device"], request.match_info["action"]
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        return _error(400, "BAD_REQUEST", "body is not JSON")
    reason = str(body.get("reason") or f"{action} by technician")[:500]
    try:
        if action == "enroll":
            await registry.enroll(device, reason)
        else:
            await registry.retire(device, reason)
    except KeyError:
        return _error(404, "UNKNOWN_DEVICE", f"no register {device}")
    except LaneStateError as exc:
        return _error(409, "NOT_ALLOWED", str(exc))
    return await _one(request)


def add_routes(app: web.Application, registry: LaneRegistry) -> None:
    app[LANES] = registry
    app.router.add_get("/api/v1/lanes", _list)
    app.router.add_get("/api/v1/lanes/{device}", _one)
    app.router.add_post("/api/v1/lanes/{device}/{action:enroll|retire}", _action)
