"""HTTP API of the catalogue: the registers' feed, lookups for devices that keep no copy, and
the technician's status and sync (used by `edge catalogue ...` and the console).

``GET  /api/v1/catalogue``                      version, last sync, registers (current, behind,
                                                stale), quarantine
``POST /api/v1/catalogue/sync``                 start a downsync now; ``?wait=SECONDS`` waits
                                                for its result (up to 600)
``GET  /api/v1/catalogue/items/{code}``         an item by barcode (else SKU), its price and
                                                active promotions; ``?at=RFC3339&level=L``
``GET  /api/v1/catalogue/feed?register=ID&cursor=C``
                                                the register feed (docs/protocol.md, "Catalogue
                                                feed"): NDJSON, streamed, gzip when asked

The feed answers one of three ways, chosen by :func:`edge.catalogue.feed.decide_feed`: the
changes after the cursor, a consistent point-in-time snapshot, or "current". The first line
says which; the last line (``"type": "end"``) carries the cursor to store, and a register must
not apply a body that lacks it (the connection broke). A delta answer is bounded by ``limit``
records (``more: true``: ask again from ``next_cursor``); a snapshot is always whole.

Errors are JSON ``{"error": {"code", "message"}}``: 400 ``INVALID_CURSOR`` / ``BAD_REQUEST``,
404 ``ITEM_NOT_FOUND``, 503 ``CATALOGUE_NOT_READY`` (with Retry-After) before the hub's first
download.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from typing import Final

import msgspec
from aiohttp import web

from edge.catalogue.errors import InvalidCursor
from edge.catalogue.feed import ChangePage, Cursor, FeedDecision
from edge.catalogue.model import BASE_PRICE_LEVEL
from edge.catalogue.service import CatalogueCode, CatalogueService, SyncResult

CATALOGUE = web.AppKey("catalogue", CatalogueService)

FEED_LIMIT_DEFAULT: Final = 5000
FEED_LIMIT_MAX: Final = 50_000
_PAGE: Final = 2000
_REGISTER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
_encoder: Final = msgspec.json.Encoder(decimal_format="string")


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


async def _not_ready(service: CatalogueService) -> web.Response | None:
    if await service.store.version() == 0:
        return _error(
            503,
            CatalogueCode.CATALOGUE_NOT_READY,
            "the hub has no catalogue yet; its first download is running",
            **{"Retry-After": "5"},
        )
    return None


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[CATALOGUE].status())


async def post_sync(request: web.Request) -> web.Response:
    service = request.app[CATALOGUE]
    if service.source is None:
        return _error(409, "NO_SOURCE", "no catalogue source is configured ([catalogue] source)")
    try:
        wait = min(600.0, max(0.0, float(request.query.get("wait", "0"))))
    except ValueError:
        return _error(400, "BAD_REQUEST", "wait must be a number of seconds")
    waiter = service.request_sync()
    if not wait:
        waiter.add_done_callback(_retrieve)
        return web.json_response({"requested": True}, status=202)
    try:
        async with asyncio.timeout(wait):
            result = await asyncio.shield(waiter)
    except TimeoutError:
        waiter.add_done_callback(_retrieve)
        return web.json_response({"requested": True, "done": False}, status=202)
    return web.json_response({"requested": True, "done": True, "result": result.as_json()})


def _retrieve(future: asyncio.Future[SyncResult]) -> None:
    if not future.cancelled():
        future.exception()


async def get_item(request: web.Request) -> web.Response:
    service = request.app[CATALOGUE]
    if (refused := await _not_ready(service)) is not None:
        return refused
    code = request.match_info["code"]
    at: dt.datetime | None = None
    if "at" in request.query:
        try:
            at = dt.datetime.fromisoformat(request.query["at"])
        except ValueError:
            return _error(400, "BAD_REQUEST", "at must be an RFC 3339 time")
        if at.tzinfo is None:
            return _error(400, "BAD_REQUEST", "at must carry its offset (e.g. Z or +01:00)")
    level = request.query.get("level", BASE_PRICE_LEVEL)
    if not 1 <= len(code) <= 64 or not 1 <= len(level) <= 32:
        return _error(400, "BAD_REQUEST", "code is 1-64 characters, level 1-32")
    found = await service.lookup(code=code, at=at, price_level=level)
    if found is None:
        return _error(404, CatalogueCode.ITEM_NOT_FOUND, f"no item with barcode or SKU {code!r}")
    return web.Response(body=_encoder.encode(found), content_type="application/json")


# -- the feed ----------------------------------------------------------------------------------


class FeedHeader(msgspec.Struct, kw_only=True, tag_field="type", tag="header"):
    """The first line of a feed answer."""

    mode: str
    """``delta``, ``snapshot`` or ``current``."""
    reason: str
    detail: str
    epoch: str
    version: int
    since: int | None = None
    """``delta``: the sequence the records follow."""


class FeedEnd(msgspec.Struct, kw_only=True, tag_field="type", tag="end"):
    """The last line: store ``next_cursor`` once everything above is applied."""

    next_cursor: str
    more: bool
    records: int


async def get_feed(request: web.Request) -> web.StreamResponse:
    service = request.app[CATALOGUE]
    register = request.query.get("register") or None
    if register is not None and not _REGISTER_ID.match(register):
        return _error(400, "BAD_REQUEST", "register is 1-100 letters, digits, '-', '_', '.', ':'")
    try:
        cursor = Cursor.parse(request.query["cursor"]) if request.query.get("cursor") else None
        limit = int(request.query.get("limit", FEED_LIMIT_DEFAULT))
    except InvalidCursor as exc:
        return _error(400, "INVALID_CURSOR", str(exc))
    except ValueError:
        return _error(400, "BAD_REQUEST", "limit must be an integer")
    if not 1 <= limit <= FEED_LIMIT_MAX:
        return _error(400, "BAD_REQUEST", f"limit must be 1-{FEED_LIMIT_MAX}")
    if (refused := await _not_ready(service)) is not None:
        return refused
    store = service.store
    decision = await store.plan_feed(cursor)
    first: ChangePage | None = None
    if decision.mode == "delta":
        assert cursor is not None
        try:
            first = await store.changes_since(cursor, limit=min(_PAGE, limit))
        except InvalidCursor as exc:  # pruned since the plan: a snapshot is always right
            decision = FeedDecision("snapshot", "stale", str(exc))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    response.enable_compression()
    await response.prepare(request)

    async def send(*lines: object) -> None:
        await response.write(b"".join(_encoder.encode(line) + b"\n" for line in lines))

    if decision.mode == "snapshot":
        async with store.snapshot() as snapshot:
            await send(_header(decision, snapshot.epoch, snapshot.version))
            count = 0
            async for part in snapshot.pages(_PAGE):
                await send(*part.records)
                count += len(part.records)
            served = str(Cursor(snapshot.epoch, snapshot.version))
            await send(FeedEnd(next_cursor=served, more=False, records=count))
    elif decision.mode == "current":
        assert cursor is not None
        await send(_header(decision, cursor.epoch, cursor.seq))
        served = str(cursor)
        await send(FeedEnd(next_cursor=served, more=False, records=0))
    else:
        assert cursor is not None
        assert first is not None
        await send(_header(decision, first.epoch, first.version, since=cursor.seq))
        page, count = first, 0
        while True:
            await send(*page.records)
            count += len(page.records)
            if not page.more or count >= limit:
                break
            page = await store.changes_since(
                Cursor.parse(page.next_cursor), limit=min(_PAGE, limit - count)
            )
        served = page.next_cursor
        await send(FeedEnd(next_cursor=served, more=page.more, records=count))
    service.note_feed(register, cursor, decision, served)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _header(
    decision: FeedDecision, epoch: str, version: int, *, since: int | None = None
) -> FeedHeader:
    return FeedHeader(
        mode=decision.mode,
        reason=decision.reason,
        detail=decision.detail,
        epoch=epoch,
        version=version,
        since=since,
    )


def add_routes(app: web.Application, service: CatalogueService) -> None:
    app[CATALOGUE] = service
    app.router.add_get("/api/v1/catalogue", get_status)
    app.router.add_post("/api/v1/catalogue/sync", post_sync)
    app.router.add_get("/api/v1/catalogue/items/{code}", get_item)
    app.router.add_get("/api/v1/catalogue/feed", get_feed)
