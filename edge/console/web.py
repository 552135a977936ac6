"""The technician's web console: server-rendered pages (Jinja2), live figures over
server-sent events, every asset served by the hub (a store LAN may have no internet).

Pages: ``/`` overview (WAN, outbox depth with a live chart, lanes, devices, catalogue, alerts),
``/lanes``, ``/devices`` (with the device profile each printer looks like: :func:`shared_devices`),
``/outbox`` (parked items with the cloud's error; retry, park),
``/catalogue``, ``/logs``. ``GET /events`` streams the overview's figures once a second.

Login, sessions and CSRF are :mod:`edge.console.web_auth`'s middleware: a page handler finds
the account in ``request[ACCOUNT]`` and the form token in ``request[CSRF]``; every form
here posts it back. The JSON API under ``/api/`` is the same data for the CLI
(``GET /api/v1/peripherals``: the Devices page's rows, for ``edge device list``).

Calling contract: :func:`add_console` once, on the hub's aiohttp app, before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from edge.api_client import when
from edge.bus.errors import RequestError
from edge.catalogue.service import CatalogueService
from edge.console.alerts import store_alerts
from edge.console.outbox_api import item_json
from edge.console.web_auth import ACCOUNT, CSRF
from edge.discovery import PRINTER_TYPE, Announcement
from edge.hq.link import HqLink
from edge.lanes.registry import LaneRegistry
from edge.logs import LEVELS, RecentLogs
from edge.outbox.service import OutboxService
from edge.outbox.store import UnknownItem, WrongState
from edge.relay.displays import Displays
from edge.relay.identify import Observation, suggest, suggestion_json
from edge.relay.printer import NetworkPrinter, PrinterError, UsbPrinter
from edge.relay.printers import Printers
from edge.relay.profiles import Profiles
from edge.relay.scales import Scales
from edge.security.pki import ROLES
from edge.security.qr import enroll_uri, qr_svg
from edge.security.service import Enrollment

log = logging.getLogger(__name__)

HERE: Final = Path(__file__).resolve().parent
EVENTS_EVERY_S: Final = 1.0
MAX_REASON: Final = 500


@dataclass(slots=True)
class ConsoleSource:
    """What the console reads and acts on; built by edge.app."""

    identity: Callable[[], dict[str, Any]]
    outbox: OutboxService | None
    lanes: LaneRegistry
    catalogue: CatalogueService
    logs: RecentLogs
    printers: Printers | None = None
    """The shared printers (None: none configured)."""
    scales: Scales | None = None
    displays: Displays | None = None
    enrollment: Enrollment | None = None
    """Device enrollment (None: the hub has no identity yet, `edge init`)."""
    hq: HqLink | None = None
    """The link to HQ (None: [hq] enabled = false)."""
    lan_url: str = ""
    """The hub's HTTPS address on the store LAN, which the enrollment QR code carries."""
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server shuts down: event streams end at once."""
    profiles: Profiles | None = None
    """The device profiles, to suggest which model a device is (None: none loaded)."""
    discovered_printers: Mapping[str, Announcement] = field(default_factory=dict)
    """Network printers seen on mDNS, by service instance name (kept by edge.app)."""


SOURCE: Final = web.AppKey("console", ConsoleSource)


# -- figures (the overview and the event stream) ------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _wan(outbox: dict[str, Any] | None) -> str:
    if outbox is None:
        return "n/a"
    state = outbox.get("breaker", {}).get("state", "n/a")
    # Half-open is still an outage until a probe gets through: the tile must not flicker
    # between DOWN and something that reads like "better" while the WAN is down.
    return {"closed": "up", "open": "DOWN", "half_open": "DOWN (probing)"}.get(state, "n/a")


async def figures(source: ConsoleSource) -> dict[str, Any]:
    """The store in one reading (the overview's tiles and the SSE payload)."""
    outbox = await source.outbox.status() if source.outbox is not None else None
    lanes = {state.value: n for state, n in source.lanes.counts().items()}
    catalogue = await source.catalogue.status()
    devices = await source.printers.devices() if source.printers is not None else []
    devices += source.scales.devices() if source.scales is not None else []
    devices += source.displays.devices() if source.displays is not None else []
    online = sum(1 for d in devices if d.get("online"))
    last = catalogue["last_sync"]
    catalogue_text = (
        f"{catalogue['stats']['items']:,} items · "
        + ("never synced" if last is None else "last sync ok" if last["ok"] else "LAST SYNC FAILED")
        + f" · {catalogue['registers']['counts']['current']} registers current"
    )
    return {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wan": _wan(outbox),
        "connector": outbox["connector"] if outbox else "none",
        "pending": outbox["pending"] if outbox else 0,
        "parked": outbox["parked"] if outbox else 0,
        "oldest": _age(outbox["oldest_pending_age_s"]) if outbox else "-",
        "delivered_per_min": round(outbox["delivered_per_min"], 1) if outbox else 0,
        "lanes_online": lanes.get("online", 0),
        "lanes_text": ", ".join(f"{n} {state}" for state, n in lanes.items() if n) or "none yet",
        "catalogue_version": catalogue["version"],
        "catalogue_text": catalogue_text,
        "devices_online": f"{online}/{len(devices)}",
        "devices_text": ", ".join(f"{d['name']}: {d['summary']}" for d in devices) or "none",
        "alerts": [asdict(a) for a in store_alerts(outbox, lanes, catalogue)],
    }


# -- pages ---------------------------------------------------------------------------------------


def _context(request: web.Request, title: str, active: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "active": active,
        "identity": request.app[SOURCE].identity(),
        "account": request.get(ACCOUNT),
        "csrf": request.get(CSRF, ""),
        "notice": request.query.get("notice", ""),
        **extra,
    }


def _render(request: web.Request, template: str, context: dict[str, Any]) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context)
    response.headers["Cache-Control"] = "no-store"
    return response


def _back(path: str, notice: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?{urllib.parse.urlencode({'notice': notice})}")


async def overview(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    return _render(request, "overview.html", _context(
        request, "Overview", "/", figures=await figures(source)
    ))  # fmt: skip


async def lanes_page(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    feed = {row["register"]: row for row in source.catalogue.registers()}
    rows = []
    for lane in source.lanes.snapshot():
        follows = feed.get(lane["device_id"]) or feed.get(lane["lane_id"] or "")
        lag = "not following" if follows is None else (
            "current" if follows["behind"] == 0 else f"{follows['behind']} behind"
            if follows["behind"] is not None else follows["state"]
        )  # fmt: skip
        rows.append({**lane, "silent": _age(lane["silent_s"]), "catalogue": lag})
    return _render(request, "lanes.html", _context(request, "Lanes", "/lanes", lanes=rows))


async def outbox_page(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    if source.outbox is None:
        raise web.HTTPNotFound(text="the outbox is disabled on this hub")
    status = await source.outbox.status()
    parked = [item_json(i) for i in await source.outbox.items("parked", 200, 0)]
    pending = [item_json(i) for i in await source.outbox.items("pending", 50, 0)]
    for item in parked:
        item["parked_at"] = when(item["parked_at"])
        detail = item["error_detail"]
        item["error_detail"] = json.dumps(detail, indent=2) if detail is not None else ""
    return _render(request, "outbox.html", _context(
        request, "Outbox", "/outbox", status=status, wan=_wan(status), parked=parked,
        pending=pending,
    ))  # fmt: skip


async def _reason(request: web.Request, back: str) -> str:
    form = await request.post()
    reason = str(form.get("reason", "")).strip()
    if not reason or len(reason) > MAX_REASON:
        raise _back(back, f"say why (1-{MAX_REASON} characters)")
    return reason


async def outbox_action(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    if source.outbox is None:
        raise web.HTTPNotFound()
    key, action = request.match_info["key"], request.match_info["action"]
    reason = await _reason(request, "/outbox")
    actor = _actor(request)
    try:
        if action == "retry":
            await source.outbox.retry(key, actor, reason)
        else:
            await source.outbox.park(key, actor, reason)
    except (UnknownItem, WrongState) as exc:
        raise _back("/outbox", f"{key}: {exc}") from None
    log.info("console: %s %s %s (%s)", actor, action, key, reason)
    raise _back("/outbox", f"{key}: {'re-queued' if action == 'retry' else 'parked'}")


async def outbox_retry_parked(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    if source.outbox is None:
        raise web.HTTPNotFound()
    reason = await _reason(request, "/outbox")
    actor = _actor(request)
    count = await source.outbox.retry_all_parked(actor, reason)
    log.info("console: %s re-queued %d parked items (%s)", actor, count, reason)
    raise _back("/outbox", f"{count} parked item(s) re-queued")


async def shared_devices(source: ConsoleSource) -> list[dict[str, Any]]:
    """The configured shared devices, then the network printers seen on mDNS that no entry
    configures; each row with ``suggested``: the device profile that fits what was observed
    of it (edge.relay.identify; None when nothing is known or nothing fits). A configured
    USB printer is observed by its USB id; a network printer by its mDNS advert (a
    configured one by the advert at its address)."""
    devices = await source.printers.devices() if source.printers is not None else []
    devices += source.scales.devices() if source.scales is not None else []
    devices += source.displays.devices() if source.displays is not None else []
    profiles = list(source.profiles) if source.profiles is not None else []

    def suggested(observation: Observation) -> dict[str, Any] | None:
        return suggestion_json(suggest(observation, profiles))

    at_address: dict[tuple[str, int], dict[str, Any]] = {}
    for row in devices:
        row["suggested"] = None
        printer = source.printers.printers.get(row["name"]) if source.printers else None
        if row["kind"] != "printer" or printer is None:
            continue
        driver = printer.driver
        if isinstance(driver, UsbPrinter):
            usb = _usb_id(driver)
            if usb is not None:
                row["suggested"] = suggested(Observation(usb=usb, kind="printer"))
        elif isinstance(driver, NetworkPrinter):
            at_address[(driver.host, driver.port)] = row
    for found in sorted(source.discovered_printers.values(), key=lambda a: a.name):
        advert = Observation(service=PRINTER_TYPE, txt=found.properties, kind="printer")
        configured = [
            at_address[(a, found.port)] for a in found.addresses if (a, found.port) in at_address
        ]
        if configured:
            configured[0]["suggested"] = suggested(advert)
            continue
        devices.append(
            {
                "name": found.name.removesuffix(f".{PRINTER_TYPE}"),
                "kind": "printer",
                "online": True,
                "summary": "discovered, not configured",
                "address": f"{found.addresses[0]}:{found.port}",
                "profile": None,
                "actions": [],
                "last_error": None,
                "has_preview": False,
                "discovered": True,
                "suggested": suggested(advert),
            }
        )
    return devices


def _usb_id(driver: UsbPrinter) -> tuple[str, str] | None:
    """The USB id the printer was last found with, else the one configured (if any)."""
    if driver.found is not None:
        return driver.found.vid, driver.found.pid
    wanted = driver.selector
    return (wanted.vid, wanted.pid) if wanted.vid else None


async def peripherals_api(request: web.Request) -> web.Response:
    """``GET /api/v1/peripherals``: :func:`shared_devices` as JSON (``edge device list``)."""
    return web.json_response({"devices": await shared_devices(request.app[SOURCE])})


async def devices_page(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    devices = await shared_devices(source)
    shown = request.query.get("preview")
    preview = None
    if shown is not None and any(d["name"] == shown and d["has_preview"] for d in devices):
        quoted = urllib.parse.quote(shown, safe="")
        preview = {"device": shown, "url": f"/devices/{quoted}/preview.png?t={time.time():.0f}"}
    return _render(request, "devices.html", _context(
        request, "Devices", "/devices", devices=devices, preview=preview
    ))  # fmt: skip


async def test_print(request: web.Request) -> web.Response:
    printers = request.app[SOURCE].printers
    name = request.match_info["name"]
    if printers is None or name not in printers.printers:
        raise web.HTTPNotFound(text=f"no device {name!r}")
    by = _actor(request)
    try:
        state = await printers.test_print(name, by=by)
    except PrinterError as exc:
        raise _back("/devices", f"{name}: not printed: {exc} ({exc.code})") from None
    query = urllib.parse.urlencode(
        {"notice": f"{name}: printed ({state.summary})", "preview": name}
    )
    raise web.HTTPSeeOther(f"/devices?{query}")


async def drawer_test(request: web.Request) -> web.Response:
    printers = request.app[SOURCE].printers
    name = request.match_info["name"]
    if printers is None or name not in printers.printers:
        raise web.HTTPNotFound(text=f"no printer {name!r}")
    try:
        state = await printers.test_drawer(name, by=_actor(request))
    except PrinterError as exc:
        raise _back("/devices", f"{name}: drawer not opened: {exc} ({exc.code})") from None
    raise _back("/devices", f"{name}: drawer kicked ({state.summary})")


async def weigh(request: web.Request) -> web.Response:
    scales = request.app[SOURCE].scales
    name = request.match_info["name"]
    if scales is None or name not in scales.scales:
        raise web.HTTPNotFound(text=f"no scale {name!r}")
    try:
        reading = await scales.read_for_console(name)
    except RequestError as exc:
        raise _back("/devices", f"{name}: no reading: {exc.message} ({exc.code})") from None
    net = " net" if reading["net"] else ""
    raise _back("/devices", f"{name}: {reading['weight']} {reading['unit']}{net} (stable)")


async def display_test(request: web.Request) -> web.Response:
    displays = request.app[SOURCE].displays
    name = request.match_info["name"]
    if displays is None or name not in displays.displays:
        raise web.HTTPNotFound(text=f"no display {name!r}")
    try:
        await displays.test(name, by=_actor(request))
    except RequestError as exc:
        raise _back("/devices", f"{name}: not shown: {exc.message} ({exc.code})") from None
    raise _back("/devices", f"{name}: test text shown")


def _actor(request: web.Request) -> str:
    return f"console:{request.get(ACCOUNT) or 'anonymous'}"


async def preview_image(request: web.Request) -> web.Response:
    printers = request.app[SOURCE].printers
    printer = printers.printers.get(request.match_info["name"]) if printers else None
    if printer is None or printer.preview is None:
        raise web.HTTPNotFound(text="no test print yet")
    return web.Response(
        body=printer.preview, content_type="image/png", headers={"Cache-Control": "no-store"}
    )


async def _enroll_view(request: web.Request, created: dict[str, str] | None) -> web.Response:
    enrollment = request.app[SOURCE].enrollment
    devices = await asyncio.to_thread(enrollment.identity.devices) if enrollment else []
    rows = [{**d.as_dict(), "not_after_text": when(d.not_after)} for d in devices]
    return _render(request, "enroll.html", _context(
        request, "Enrollment", "/enroll", enabled=enrollment is not None, devices=rows,
        created=created, roles=ROLES,
        fingerprint=enrollment.identity.ca_fingerprint if enrollment else "",
    ))  # fmt: skip


async def enroll_page(request: web.Request) -> web.Response:
    return await _enroll_view(request, None)


async def enroll_create(request: web.Request) -> web.Response:
    enrollment = request.app[SOURCE].enrollment
    if enrollment is None:
        raise _back("/enroll", "the hub has no identity yet: run `edge init` first")
    form = await request.post()
    name, role, lane = (str(form.get(k, "")).strip() for k in ("name", "role", "lane"))
    try:
        created = await enrollment.create_code(name, role, lane)
    except ValueError as exc:
        raise _back("/enroll", f"no code created: {exc}") from None
    log.info("console: %s created an enrollment code for %s", request.get(ACCOUNT), name)
    uri = enroll_uri(created.code, enrollment.identity.ca_fingerprint, request.app[SOURCE].lan_url)
    return await _enroll_view(request, {
        "name": created.name, "role": created.role, "code": created.code,
        "expires": when(created.expires_at), "uri": uri, "qr": qr_svg(uri),
    })  # fmt: skip


async def config_page(request: web.Request) -> web.Response:
    hq = request.app[SOURCE].hq
    status = hq.status() if hq is not None else None
    applied = json.dumps(status["applied"], indent=2) if status and status["applied"] else ""
    return _render(request, "config.html", _context(
        request, "Config", "/config", hq=status, applied=applied,
    ))  # fmt: skip


async def enroll_revoke(request: web.Request) -> web.Response:
    enrollment = request.app[SOURCE].enrollment
    name = request.match_info["name"]
    if enrollment is None or not await enrollment.revoke(name):
        raise _back("/enroll", f"{name}: nothing to revoke")
    log.warning("console: %s revoked %s", request.get(ACCOUNT), name)
    raise _back("/enroll", f"{name} revoked: its connection is closed")


async def catalogue_page(request: web.Request) -> web.Response:
    status = await request.app[SOURCE].catalogue.status()
    context = _context(request, "Catalogue", "/catalogue", c=status)
    return _render(request, "catalogue.html", context)


async def catalogue_sync(request: web.Request) -> web.Response:
    catalogue = request.app[SOURCE].catalogue
    if catalogue.source is None:
        raise _back("/catalogue", "no catalogue source is configured")
    catalogue.request_sync().add_done_callback(_retrieve)
    raise _back("/catalogue", "sync started")


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def logs_page(request: web.Request) -> web.Response:
    level = request.query.get("level", "INFO")
    level = level if level in LEVELS else "INFO"
    text = request.query.get("q", "")[:200]
    entries = [
        {**asdict(e), "time": dt.datetime.fromtimestamp(e.at).strftime("%H:%M:%S")}
        for e in request.app[SOURCE].logs.entries(level=level, text=text, limit=500)
    ]
    return _render(request, "logs.html", _context(
        request, "Logs", "/logs", entries=entries, levels=LEVELS, level=level, q=text
    ))  # fmt: skip


# -- live figures --------------------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """``text/event-stream``: an ``event: figures`` every second until the client leaves or
    the hub stops."""
    source = request.app[SOURCE]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
        while not source.closing.is_set():
            payload = json.dumps(await figures(source), separators=(",", ":"))
            await response.write(f"event: figures\ndata: {payload}\n\n".encode())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EVENTS_EVERY_S):
                    await source.closing.wait()
    return response


async def _close_streams(app: web.Application) -> None:
    app[SOURCE].closing.set()


def add_console(app: web.Application, source: ConsoleSource) -> None:
    app[SOURCE] = source
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/", overview)
    app.router.add_get("/lanes", lanes_page)
    app.router.add_get("/devices", devices_page)
    app.router.add_post("/devices/{name}/test-print", test_print)
    app.router.add_get("/devices/{name}/preview.png", preview_image)
    app.router.add_post("/devices/{name}/drawer-test", drawer_test)
    app.router.add_post("/devices/{name}/weigh", weigh)
    app.router.add_post("/devices/{name}/test-display", display_test)
    app.router.add_get("/outbox", outbox_page)
    app.router.add_post("/outbox/items/{key}/{action:retry|park}", outbox_action)
    app.router.add_post("/outbox/retry-parked", outbox_retry_parked)
    app.router.add_get("/config", config_page)
    app.router.add_get("/enroll", enroll_page)
    app.router.add_post("/enroll", enroll_create)
    app.router.add_post("/enroll/{name}/revoke", enroll_revoke)
    app.router.add_get("/catalogue", catalogue_page)
    app.router.add_post("/catalogue/sync", catalogue_sync)
    app.router.add_get("/logs", logs_page)
    app.router.add_get("/events", events)
    app.router.add_get("/api/v1/peripherals", peripherals_api)
    app.router.add_static("/static/", HERE / "static", append_version=False)
