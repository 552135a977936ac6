"""Operator HTTP API of the outbox (used by `edge outbox ...` and the console).

``GET  /api/v1/outbox``                         figures: depth, oldest age, breaker, disk
``GET  /api/v1/outbox/items?status=parked``     items (pending|parked|delivered), paged by seq
                                                 (``limit``, ``after``), with their ``total``
``GET  /api/v1/outbox/items/{ref}``             one item, with its audit trail
``POST /api/v1/outbox/items/{ref}/retry``       {"actor", "reason"}: re-queue a parked item, or
                                                 post a delivered one again
``POST /api/v1/outbox/items/{ref}/park``        {"actor", "reason"}: hold a pending item
``POST /api/v1/outbox/retry-parked``            {"actor", "reason"}: re-queue every parked item

``ref`` is the item's txn id, or its seq when no item has that txn id.

Errors are JSON ``{"error": {"code", "message"}}`` with 400 (bad input), 404 ``UNKNOWN_ITEM``,
409 ``WRONG_STATE`` (the item is not in a state the action applies to) or 503 ``UNAVAILABLE``
with Retry-After (the outbox is closed: the hub is starting or stopping, or its file is damaged
and the hub restarts to salvage it; nothing was done, ask again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from edge.outbox.store import (
    Item,
    Status,
    StoreClosed,
    StoreDamaged,
    UnknownItem,
    WrongState,
)

MAX_REASON = 500


class OutboxOperations(Protocol):
    async def status(self) -> dict[str, Any]: ...
    async def items(self, status: Status, limit: int, after_seq: int) -> list[Item]: ...
    async def item(self, ref: str) -> tuple[Item, list[dict[str, Any]]] | None: ...
    async def retry(self, ref: str, actor: str, reason: str) -> Item: ...
    async def park(self, ref: str, actor: str, reason: str) -> Item: ...
    async def retry_all_parked(self, actor: str, reason: str) -> int: ...


OUTBOX = web.AppKey("outbox", OutboxOperations)


def item_json(item: Item) -> dict[str, Any]:
    return {
        "seq": item.seq,
        "key": item.key,
        "kind": item.kind,
        "lane": item.lane,
        "status": item.status,
        "accepted_at": item.accepted_at,
        "attempts": item.attempts,
        "next_attempt_at": item.next_attempt_at,
        "last_error": item.last_error,
        "record_id": item.record_id,
        "delivered_at": item.delivered_at,
        "parked_at": item.parked_at,
        "error_detail": item.error_detail,
        "depends_on": list(item.depends_on),
        "flags": list(item.flags),
    }


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


@web.middleware
async def _while_closed(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The outbox refuses work while the hub starts or stops, or once its file is damaged (the
    hub restarts to salvage it): a 503 the CLI and the console show as such (and can retry),
    not a 500 that reads like a bug."""
    try:
        return await handler(request)
    except (StoreClosed, StoreDamaged) as exc:
        return _error(503, "UNAVAILABLE", str(exc), **{"Retry-After": "5"})


async def _action_body(request: web.Request) -> tuple[str, str] | web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "BAD_REQUEST", "body must be JSON {actor, reason}")
    if not isinstance(body, dict):
        return _error(400, "BAD_REQUEST", "body must be a JSON object {actor, reason}")
    actor, reason = body.get("actor"), body.get("reason")
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 100:
        return _error(400, "BAD_REQUEST", "actor (who does this) is required, up to 100 chars")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        return _error(400, "BAD_REQUEST", f"reason is required, up to {MAX_REASON} chars")
    return actor.strip(), reason.strip()


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[OUTBOX].status())


async def list_items(request: web.Request) -> web.Response:
    status = request.query.get("status", "pending")
    if status not in ("pending", "parked", "delivered"):
        return _error(400, "BAD_REQUEST", "status must be pending, parked or delivered")
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
        after = max(0, int(request.query.get("after", "0")))
    except ValueError:
        return _error(400, "BAD_REQUEST", "limit and after must be integers")
    ops = request.app[OUTBOX]
    items = await ops.items(status, limit, after)  # type: ignore[arg-type]
    total = (await ops.status())[status]
    return web.json_response({"items": [item_json(i) for i in items], "total": total})


async def get_item(request: web.Request) -> web.Response:
    found = await request.app[OUTBOX].item(request.match_info["ref"])
    if found is None:
        return _error(404, "UNKNOWN_ITEM", f"no outbox item {request.match_info['ref']!r}")
    item, audit = found
    return web.json_response({**item_json(item), "audit": audit})


async def _act(request: web.Request, action: str) -> web.Response:
    parsed = await _action_body(request)
    if isinstance(parsed, web.Response):
        return parsed
    actor, reason = parsed
    ops = request.app[OUTBOX]
    try:
        item = await (ops.retry if action == "retry" else ops.park)(
            request.match_info["ref"], actor, reason
        )
    except UnknownItem as exc:
        return _error(404, "UNKNOWN_ITEM", str(exc))
    except WrongState as exc:
        return _error(409, "WRONG_STATE", str(exc))
    return web.json_response(item_json(item))


async def retry_item(request: web.Request) -> web.Response:
    return await _act(request, "retry")


async def park_item(request: web.Request) -> web.Response:
    return await _act(request, "park")


async def retry_parked(request: web.Request) -> web.Response:
    parsed = await _action_body(request)
    if isinstance(parsed, web.Response):
        return parsed
    count = await request.app[OUTBOX].retry_all_parked(*parsed)
    return web.json_response({"retried": count})


def add_routes(app: web.Application, operations: OutboxOperations) -> None:
    app[OUTBOX] = operations
    app.middlewares.append(_while_closed)
    app.router.add_get("/api/v1/outbox", get_status)
    app.router.add_get("/api/v1/outbox/items", list_items)
    app.router.add_get("/api/v1/outbox/items/{ref}", get_item)
    app.router.add_post("/api/v1/outbox/items/{ref}/retry", retry_item)
    app.router.add_post("/api/v1/outbox/items/{ref}/park", park_item)
    app.router.add_post("/api/v1/outbox/retry-parked", retry_parked)
