"""The store's receipt printers as the hub runs them: status watched and published, test
prints with a preview for the console.

Theory of operation
-------------------
*Status.* Every ``devices.status_every_s`` the hub asks each configured printer for its status
(:meth:`~edge.relay.printer.NetworkPrinter.status`). A printer is declared offline only after
``devices.misses_to_offline`` checks in a row got no answer (a printer busy cutting, or a Wi-Fi
bridge hiccup, must not flap the lanes' status: the Odoo double-print lesson); one answer puts
it back online. The debounced status is retained on ``store/{store}/device/{name}/status``
(:func:`status_topic`) and published only when it changes, and again after every reconnection
of the bus, so a register that connects learns every printer's state at once.

*Printing for the lanes* (MQTT ``device.print`` on the lane's scope, docs/protocol.md §10):
the lane sends a structured receipt (:class:`devices.receipt.Receipt`) with its own
``command_id``. The command is de-duplicated by that id: a re-sent command that already
printed gets the first answer again (``duplicate: true``) and never prints twice; one still
printing waits for the same outcome; the same id with other content is refused
(``COMMAND_ID_CONFLICT``). A device error (paper out, cover open, offline) is answered as a
retryable error and not remembered, so the lane may send the same command again once the
printer is fixed. ``device.drawer`` opens a cash drawer wired to a printer (pin 2 or 5), with
the same rules.

*Test print.* :meth:`Printers.test_print` prints a test receipt (store, printer, address,
profile, time, a barcode) and keeps a preview PNG drawn from the very bytes it sent
(:mod:`devices.escpos_preview`), which the console shows next to the printer.

One job at a time per printer (a lock); status checks and jobs share it, so a check never
interleaves its requests with a job's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

import msgspec

from devices.escpos_preview import EscPosDecoder, JobEnded, PrintedJob
from devices.receipt import Barcode, Receipt, encode_drawer_kick, encode_receipt
from edge.bus.client import Bus
from edge.bus.errors import BusUnavailable, RequestError
from edge.bus.rpc import RequestContext, RpcRouter, decode_data
from edge.bus.topics import Topics
from edge.relay.core import DeviceFlags, PublishedStatus, StatusDebouncer
from edge.relay.printer import NetworkPrinter, PrinterError, PrinterState
from edge.settings import DevicesSettings, PrinterSettings

log = logging.getLogger(__name__)


class DeviceStatus(msgspec.Struct, kw_only=True):
    """Retained on ``store/{store}/device/{name}/status`` (docs/protocol.md, devices)."""

    v: int = 1
    device: str
    kind: Literal["printer", "display"]
    online: bool
    """Debounced: false only after several missed checks in a row."""
    summary: str
    """``ready``, ``offline``, ``paper out``, ``cover open``, ``paper near end``, ...
    (a display: ``ready`` or ``offline``, from its serial line: edge.relay.displays)"""
    paper_near_end: bool = False
    paper_out: bool = False
    cover_open: bool = False
    since: str
    """RFC 3339: when ``online`` last changed."""


COMMANDS_REMEMBERED: Final = 10_000
"""Done commands kept for de-duplication (a day of receipts in a busy store)."""

CommandId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,100}$")]
DeviceName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


class PrintRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``device.print`` data."""

    command_id: CommandId
    """Created by the lane; a re-send of the same command carries the same id."""
    device: DeviceName
    receipt: Receipt


class DrawerRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``device.drawer`` data: kick the drawer connected to ``device`` on ``pin``."""

    command_id: CommandId
    device: DeviceName
    pin: Literal[2, 5] = 2


def status_topic(topics: Topics, name: str) -> str:
    return f"{topics.root}/device/{name}/status"


@dataclass(slots=True)
class Printer:
    settings: PrinterSettings
    driver: NetworkPrinter
    debounced: StatusDebouncer
    state: PrinterState | None = None
    """The last status read (None: never answered)."""
    since: float = 0.0
    """Wall-clock time ``online`` last changed (for the status document)."""
    last_error: str | None = None
    preview: bytes | None = None
    """PNG of the last test print."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def online(self) -> bool:
        """Debounced (edge.relay.core.StatusDebouncer): False only after several misses."""
        status = self.debounced.status
        return status is not None and status.online

    @property
    def summary(self) -> str:
        if not self.online:
            known = self.debounced.status is not None or self.debounced.misses
            return "offline" if known else "not checked yet"
        return self.state.summary if self.state is not None else "online"

    def status_document(self) -> DeviceStatus:
        state = self.state
        return DeviceStatus(
            device=self.settings.name,
            kind="printer",
            online=self.online,
            summary=self.summary,
            paper_near_end=state is not None and state.paper_near_end,
            paper_out=state is not None and state.paper_out,
            cover_open=state is not None and state.cover_open,
            since=dt.datetime.fromtimestamp(self.since, dt.UTC).isoformat(timespec="seconds"),
        )


class Printers:
    def __init__(
        self,
        settings: DevicesSettings,
        bus: Bus | None,
        topics: Topics,
        *,
        store_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._bus = bus
        self._topics = topics
        self._store_id = store_id
        self._clock = clock
        self.printers = {
            p.name: Printer(
                p,
                NetworkPrinter(p.host, p.port, timeout_s=settings.timeout_s),
                StatusDebouncer(p.name, misses_to_offline=settings.misses_to_offline),
            )
            for p in settings.printers
        }
        self._changed = asyncio.Event()
        self._commands: OrderedDict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = OrderedDict()

    # -- status ----------------------------------------------------------------------------

    async def check(self, printer: Printer) -> None:
        """One status check, debounced (module docstring)."""
        name = printer.settings.name
        was_online = printer.online
        async with printer.lock:
            try:
                state = await printer.driver.status()
            except PrinterError as exc:
                printer.last_error = str(exc)
                self._publish(printer, printer.debounced.missed(time.monotonic()), was_online)
                if was_online and not printer.online:
                    log.warning("devices: printer %s offline: %s", name, exc)
                return
        printer.last_error = None
        flags = DeviceFlags(state.paper_near_end, state.paper_out, state.cover_open)
        changed = state != printer.state
        printer.state = state
        self._publish(printer, printer.debounced.observe(True, time.monotonic(), flags), was_online)
        if not was_online:
            log.info("devices: printer %s online (%s)", name, state.summary)
        elif changed:
            log.info("devices: printer %s: %s", name, state.summary)
            self._changed.set()  # e.g. an error flag the published flags do not carry

    def _publish(self, printer: Printer, status: PublishedStatus | None, was_online: bool) -> None:
        """Note a change of the published status (None: nothing to publish)."""
        if status is None:
            return
        if status.online != was_online or printer.since == 0.0:
            printer.since = self._clock()
        self._changed.set()

    async def run(self) -> None:
        """Check every printer on the interval and publish changes. Runs until cancelled."""
        if not self.printers:
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._publish_loop(), name="devices-publish")
            while True:
                await asyncio.gather(*(self.check(p) for p in self.printers.values()))
                await asyncio.sleep(self.settings.status_every_s)

    async def _publish_loop(self) -> None:
        bus = self._bus
        if bus is None:
            return
        published: dict[str, tuple[int, bytes]] = {}
        while True:
            self._changed.clear()
            await bus.wait_connected()
            for name, printer in self.printers.items():
                body = msgspec.json.encode(printer.status_document())
                stamp = (bus.connects, body)
                if published.get(name) == stamp:
                    continue
                try:
                    await bus.publish(status_topic(self._topics, name), body, retain=True)
                    published[name] = stamp
                except BusUnavailable:
                    break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.status_every_s):
                    await self._changed.wait()

    # -- the lanes' commands ---------------------------------------------------------------

    def register_rpc(self, router: RpcRouter) -> None:
        router.register("lane", "device.print", self._rpc_print)
        router.register("lane", "device.drawer", self._rpc_drawer)

    def _printer(self, name: str) -> Printer:
        printer = self.printers.get(name)
        if printer is None:
            raise RequestError(
                "DEVICE_UNKNOWN", f"no shared device {name!r}", retryable=False,
                details={"known": sorted(self.printers)},
            )  # fmt: skip
        return printer

    async def _rpc_print(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        request = decode_data(data, PrintRequest)
        printer = self._printer(request.device)

        async def work() -> dict[str, Any]:
            job = await asyncio.to_thread(encode_receipt, request.receipt, printer.settings.profile)
            return await self._send(printer, job)

        return await self._once(request.command_id, bytes(data), work)

    async def _rpc_drawer(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        request = decode_data(data, DrawerRequest)
        printer = self._printer(request.device)

        async def work() -> dict[str, Any]:
            return await self._send(printer, encode_drawer_kick(request.pin))

        return await self._once(request.command_id, bytes(data), work)

    async def _send(self, printer: Printer, job: bytes) -> dict[str, Any]:
        try:
            async with printer.lock:
                state = await printer.driver.print(job)
        except PrinterError as exc:
            raise RequestError(
                exc.code, str(exc), retryable=True, details={"device": printer.settings.name}
            ) from None
        printer.state = state
        return {"device": printer.settings.name, "state": state.summary}

    async def _once(
        self, command_id: str, content: bytes, work: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Run ``work`` once per ``command_id`` (module docstring: de-duplication)."""
        digest = hashlib.sha256(content).hexdigest()
        known = self._commands.get(command_id)
        if known is not None:
            if known[0] != digest:
                raise RequestError(
                    "COMMAND_ID_CONFLICT",
                    f"command {command_id} was already sent with other content",
                    retryable=False,
                )
            first = await asyncio.shield(known[1])
            return {**first, "duplicate": True}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._commands[command_id] = (digest, future)
        try:
            result = {"command_id": command_id, **(await work()), "duplicate": False}
        except BaseException as exc:
            del self._commands[command_id]  # not done: the lane may send it again
            future.set_exception(exc)
            future.exception()  # retrieved: waiting duplicates get it
            raise
        future.set_result(result)
        while len(self._commands) > COMMANDS_REMEMBERED:
            self._commands.popitem(last=False)
        return result

    # -- the console -----------------------------------------------------------------------

    async def devices(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "kind": "printer",
                "online": p.online,
                "summary": p.summary,
                "address": p.driver.address,
                "profile": p.settings.profile,
                "actions": ["test-print", "drawer-test"],
                "last_error": p.last_error,
                "has_preview": p.preview is not None,
            }
            for name, p in self.printers.items()
        ]

    def test_receipt(self, printer: Printer, by: str) -> Receipt:
        now = dt.datetime.fromtimestamp(self._clock()).strftime("%Y-%m-%d %H:%M:%S")
        return Receipt(
            header=("store-edge", f"store {self._store_id}", "TEST PRINT"),
            footer=(
                f"printer {printer.settings.name} at {printer.driver.address}",
                f"profile {printer.settings.profile}, {printer.settings.columns} columns",
                f"{now} by {by}",
            ),
            barcode=Barcode(symbology="CODE128", data=f"TEST-{printer.settings.name}"[:14]),
            columns=printer.settings.columns,
        )

    async def test_print(self, name: str, *, by: str) -> PrinterState:
        """Print a test receipt now and keep its preview. Raises KeyError for an unknown
        printer and :class:`PrinterError` when it cannot print."""
        printer = self.printers[name]
        receipt = self.test_receipt(printer, by)
        job = await asyncio.to_thread(encode_receipt, receipt, printer.settings.profile)
        async with printer.lock:
            state = await printer.driver.print(job)
        printer.preview = await asyncio.to_thread(preview_png, job, printer.settings.columns)
        log.info("devices: test print on %s by %s", name, by)
        return state

    async def test_drawer(self, name: str, *, by: str) -> PrinterState:
        """Kick the drawer wired to the printer (pin 2), as a technician's test. Raises
        KeyError for an unknown printer and :class:`PrinterError` when it cannot."""
        printer = self.printers[name]
        async with printer.lock:
            state = await printer.driver.print(encode_drawer_kick(2))
        log.info("devices: drawer test on %s by %s", name, by)
        return state


def preview_png(job: bytes, columns: int) -> bytes:
    """The receipt as the printer prints ``job``, drawn as a PNG."""
    ended = [e for e in EscPosDecoder().feed(job) if isinstance(e, JobEnded)]
    if not ended:
        raise ValueError("the job has no cut: nothing would print")
    last = ended[-1]
    return PrintedJob(
        number=1,
        raw=last.raw,
        blocks=last.blocks,
        cuts=last.cuts,
        drawer_kicks=last.drawer_kicks,
        unknown_commands=last.unknown_commands,
        columns=columns,
    ).preview_png()
