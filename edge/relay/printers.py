"""The store's receipt printers as the lanes use them: ``device.print`` and ``device.drawer``,
status watched and published, test prints with a preview for the console.

Theory of operation
-------------------
The decisions are :class:`edge.relay.core.Relay`'s, as for the customer displays
(:mod:`edge.relay.displays`); this module only does the I/O, through
:class:`~edge.relay.printer.NetworkPrinter` (raw TCP 9100) or
:class:`~edge.relay.printer.UsbPrinter` (USB, Linux usblp).

*A command* (MQTT ``device.print`` or ``device.drawer`` on the lane's scope, docs/protocol.md
§10): a structured receipt (:class:`devices.receipt.Receipt`) or a drawer kick (pin 2 or 5,
by default the drawer configured for the printer with its pulse: :func:`drawer_kick`), with
the lane's own ``command_id``.

1. The request is decoded (``SCHEMA_INVALID``) and submitted to the relay core with a digest of
   its content, a priority (a receipt :data:`~edge.relay.core.PRIORITY_RECEIPT`, a drawer kick
   :data:`~edge.relay.core.PRIORITY_DRAWER`, a report ``"priority": "report"``
   :data:`~edge.relay.core.PRIORITY_REPORT`: a customer's receipt is never stuck behind an
   end-of-day report) and a deadline ``devices.timeout_s`` away. A new ``command_id`` is
   queued; a re-send of one queued or running waits for the same outcome; a re-send of one
   that finished gets its answer again with ``duplicate: true`` and **never prints twice**;
   the same id with other content is ``COMMAND_ID_CONFLICT``; ``DEVICE_UNKNOWN``,
   ``OFFLINE`` (the printer is known to be gone) and ``QUEUE_FULL`` are refused at once.
   The submission happens before the handler's first ``await``, so the commands of one lane
   are queued in the order they arrived: a lane's receipts print in its order.
2. One worker per printer takes the next command (:meth:`Relay.next_for`: highest priority
   first, in arrival order among equals), encodes a receipt (in a thread, unless
   :func:`devices.receipt.quick_to_encode`: a short text receipt costs less than the hop),
   sends it (:meth:`NetworkPrinter.print`: refused before sending when paper is out, the
   cover open or the printer offline; bounded by ``devices.timeout_s``) and reports the
   outcome with :meth:`Relay.finish`. Paper out, cover open, a printer error and offline are
   retryable errors (nothing was printed): a re-send of the same command runs again once the
   printer is fixed. A receipt the printer cannot lay out (an unreadable logo) is
   ``SCHEMA_INVALID``.
3. A command still queued at its deadline is answered ``TIMEOUT`` (retryable) and is never
   printed (:meth:`Relay.expired`, on a half-second timer): a receipt must not come out
   minutes after the customer left.
4. A printer the debouncer declares offline fails every queued command with ``OFFLINE``
   (:meth:`Relay.set_online`), and new ones are refused ``OFFLINE`` until a check answers.

*Status.* Every ``devices.status_every_s`` the hub asks each printer for its status
(:meth:`NetworkPrinter.status`); a job counts the same way (its status answers, or its lost
connection). :class:`edge.relay.core.StatusDebouncer` declares a printer offline only after
``devices.misses_to_offline`` misses in a row (a printer busy cutting, or a Wi-Fi bridge
hiccup, must not flap the lanes' status: the Odoo double-print lesson); one answer puts it
back online. The debounced status is retained on ``store/{store}/device/{name}/status``
(:class:`edge.relay.status.StatusPublisher`), published when it changes and again after every
reconnection of the bus, so a register that connects learns every printer's state at once.

*The console* (:meth:`Printers.test_print`, :meth:`Printers.test_drawer`) goes through the
same queue and worker (as lane ``console``; a test print at report priority, so it never
delays a customer's receipt), after a status check when the printer is known to be offline,
so a technician who just fixed it gets a real attempt. A test print keeps a preview PNG drawn
from the very bytes it sent (:mod:`devices.escpos_preview`).

One writer per printer at a time: the worker and the status checks share a lock, so a check
never interleaves its requests with a job's bytes, and a network printer's connection, kept
``devices.keep_open_s`` from one command or check to the next (:mod:`edge.relay.printer`),
has one user at a time. Stopping closes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

import msgspec

from devices.escpos_preview import EscPosDecoder, JobEnded, PrintedJob
from devices.receipt import (
    Barcode,
    Receipt,
    encode_drawer_kick,
    encode_receipt,
    quick_to_encode,
)
from edge.bus.client import Bus
from edge.bus.errors import ErrorCode
from edge.bus.rpc import RequestContext, RpcRouter, decode_data
from edge.bus.topics import Topics
from edge.relay.core import (
    PRIORITY_DRAWER,
    PRIORITY_RECEIPT,
    PRIORITY_REPORT,
    Command,
    CommandKind,
    DeviceError,
    DeviceFlags,
    Done,
    Outcome,
    PublishedStatus,
    Relay,
    StatusDebouncer,
    device_error,
)
from edge.relay.pending import Pending, answer, run_devices
from edge.relay.printer import EscPosPrinter, PrinterError, PrinterState, printer_driver
from edge.relay.status import DeviceStatus, StatusPublisher, rfc3339
from edge.settings import DevicesSettings, PrinterSettings

log = logging.getLogger(__name__)

CONSOLE_LANE: Final = "console"
"""The lane the console's tests are queued as."""


CommandId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,100}$")]
DeviceName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


class PrintRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``device.print`` data."""

    command_id: CommandId
    """Created by the lane; a re-send of the same command carries the same id."""
    device: DeviceName
    receipt: Receipt
    priority: Literal["receipt", "report"] = "receipt"
    """``receipt`` (a customer is waiting) runs before ``report`` (an end-of-day report, a
    reprint) queued for the same printer."""


class DrawerRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``device.drawer`` data: kick the drawer connected to ``device`` (on ``pin``)."""

    command_id: CommandId
    device: DeviceName
    pin: Literal[2, 5] | msgspec.UnsetType = msgspec.UNSET
    """Omitted: the drawer configured for the printer, its pin and pulse (pin 2 when none is
    configured). Given: that pin, with the configured drawer's pulse if it is its pin."""


PRIORITIES: Final[dict[str, int]] = {"receipt": PRIORITY_RECEIPT, "report": PRIORITY_REPORT}


@dataclass(slots=True)
class Printer:
    settings: PrinterSettings
    driver: EscPosPrinter
    debounced: StatusDebouncer
    state: PrinterState | None = None
    """The last status read (None: never answered)."""
    since: float = 0.0
    """Wall-clock time ``online`` last changed (for the status document)."""
    last_error: str | None = None
    preview: bytes | None = None
    """PNG of the last test print."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One writer on the printer at a time: a job or a status check."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a command is queued for this printer."""

    @property
    def online(self) -> bool:
        """Debounced (edge.relay.core.StatusDebouncer): False only after several misses."""
        return self.debounced.online

    @property
    def summary(self) -> str:
        if not self.online:
            return self.debounced.not_online_summary
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
            since=rfc3339(self.since),
        )


@dataclass(frozen=True, slots=True)
class _Job:
    """What the worker sends: ``receipt`` encoded for the printer's profile (off the event
    loop), or ``data`` as it is (a drawer kick, a test print already encoded)."""

    receipt: Receipt | None = None
    data: bytes = b""


class Printers:
    """The printers of ``settings.printers``: RPC handlers, workers, status (module docstring)."""

    def __init__(
        self,
        settings: DevicesSettings,
        bus: Bus | None,
        topics: Topics,
        *,
        store_id: str,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._store_id = store_id
        self._clock = clock
        self._wall_clock = wall_clock
        self.relay = Relay()
        self.printers: dict[str, Printer] = {}
        for p in settings.printers:
            self.relay.add_device(p.name, "printer")
            self.printers[p.name] = Printer(
                p,
                printer_driver(p, settings),
                StatusDebouncer(p.name, misses_to_offline=settings.misses_to_offline),
            )
        self._pending: Pending[_Job] = Pending(self.relay, clock)
        self._status = StatusPublisher(
            bus,
            topics,
            {name: p.status_document for name, p in self.printers.items()},
            every_s=settings.status_every_s,
        )

    # -- the lanes' commands ---------------------------------------------------------------

    def register_rpc(self, router: RpcRouter) -> None:
        router.register("lane", "device.print", self._rpc_print)
        router.register("lane", "device.drawer", self._rpc_drawer)

    async def _rpc_print(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        request = decode_data(data, PrintRequest)
        assert ctx.lane is not None
        return await self.print_receipt(request, ctx.lane)

    async def _rpc_drawer(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        request = decode_data(data, DrawerRequest)
        assert ctx.lane is not None
        return await self.kick_drawer(request, ctx.lane)

    async def print_receipt(self, request: PrintRequest, lane: str) -> dict[str, Any]:
        """``device.print`` (module docstring, steps 1-4); raises :class:`RequestError`."""
        outcome, duplicate = await self._run(
            self._command(request, lane, "print", PRIORITIES[request.priority]),
            _Job(receipt=request.receipt),
        )
        return answer(request.command_id, outcome, duplicate=duplicate)

    async def kick_drawer(self, request: DrawerRequest, lane: str) -> dict[str, Any]:
        """``device.drawer`` (module docstring, steps 1-4); raises :class:`RequestError`."""
        printer = self.printers.get(request.device)
        pin = None if request.pin is msgspec.UNSET else request.pin
        kick = drawer_kick(printer.settings, pin) if printer else encode_drawer_kick(2)
        if printer and printer.settings.drawer and pin not in (None, printer.settings.drawer_pin):
            log.info(
                "devices: lane %s kicks pin %s of %s; its drawer (%s) is on pin %s",
                lane, pin, request.device, printer.settings.drawer, printer.settings.drawer_pin,
            )  # fmt: skip
        outcome, duplicate = await self._run(
            self._command(request, lane, "drawer", PRIORITY_DRAWER), _Job(data=kick)
        )
        return answer(request.command_id, outcome, duplicate=duplicate)

    def _command(
        self, request: PrintRequest | DrawerRequest, lane: str, kind: CommandKind, priority: int
    ) -> Command:
        now = self._clock()
        return Command(
            command_id=request.command_id,
            lane=lane,
            device=request.device,
            kind=kind,
            priority=priority,
            payload_digest=hashlib.sha256(msgspec.json.encode(request)).hexdigest(),
            deadline=now + self.settings.timeout_s,
        )

    async def _run(self, command: Command, job: _Job) -> tuple[Outcome, bool]:
        printer = self.printers.get(command.device)
        return await self._pending.submit(command, job, printer.wake if printer else None)

    # -- the worker ------------------------------------------------------------------------

    async def _work(self, printer: Printer) -> None:
        name = printer.settings.name
        while True:
            command, job = await self._pending.next(name, printer.wake)
            try:
                outcome = await self._execute(printer, job)
            except Exception:  # a bug must cost one answer, not the printer's worker
                ref = f"{time.time_ns():x}"[-12:]
                log.exception("devices: %s on %s failed (ref %s)", command.command_id, name, ref)
                outcome = DeviceError(
                    ErrorCode.INTERNAL, False, f"internal error (ref {ref})", name, {"ref": ref}
                )
            self._pending.finish(command.command_id, outcome)

    async def _execute(self, printer: Printer, job: _Job) -> Outcome:
        """Encode and send one job (module docstring, step 2). Never raises a device fault:
        it is the outcome."""
        name = printer.settings.name
        data = job.data
        if job.receipt is not None:
            profile = printer.settings.profile
            try:
                if quick_to_encode(job.receipt):
                    data = encode_receipt(job.receipt, profile)  # less than a thread hop costs
                else:
                    data = await asyncio.to_thread(encode_receipt, job.receipt, profile)
            except ValueError as exc:  # e.g. a logo that is not a readable PNG
                message = f"the receipt cannot be laid out for {name}: {exc}"
                return DeviceError(ErrorCode.SCHEMA_INVALID, False, message, name)
        async with printer.lock:
            try:
                state = await printer.driver.print(data)
            except PrinterError as exc:
                if exc.code in ("OFFLINE", "UNCONFIRMED"):
                    self._observe(printer, None, str(exc))
                return device_error(exc.code, str(exc), device=name)
            self._observe(printer, state)
        return Done({"device": name, "state": state.summary})

    # -- status ----------------------------------------------------------------------------

    async def check(self, printer: Printer) -> None:
        """One status check, debounced (module docstring, "Status")."""
        async with printer.lock:
            try:
                state = await printer.driver.status()
            except PrinterError as exc:
                self._observe(printer, None, str(exc))
                return
            self._observe(printer, state)

    def _observe(self, printer: Printer, state: PrinterState | None, error: str = "") -> None:
        """A check or a job ended: the printer answered ``state``, or nothing (``error``).
        Feeds the debouncer, notes what to publish and tells the relay when the printer
        goes offline or comes back."""
        name = printer.settings.name
        now = self._clock()
        before = printer.debounced.status
        status: PublishedStatus | None
        if state is None:
            printer.last_error = error
            status = printer.debounced.missed(now)
        else:
            printer.last_error = None
            if state != printer.state and before is not None and before.online:
                log.info("devices: printer %s: %s", name, state.summary)
                self._status.changed()  # e.g. an error flag the published flags do not carry
            printer.state = state
            flags = DeviceFlags(state.paper_near_end, state.paper_out, state.cover_open)
            status = printer.debounced.observe(True, now, flags)
        if status is None:
            return
        if before is None or before.online != status.online:
            printer.since = self._wall_clock()
            if status.online:
                summary = state.summary if state is not None else "online"
                log.info("devices: printer %s online (%s)", name, summary)
            else:
                log.warning("devices: printer %s offline: %s", name, error)
            self._pending.resolve(self.relay.set_online(name, status.online, now))
        self._status.changed()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Workers, status checks and publication. Runs until cancelled."""
        if not self.printers:
            return
        try:
            await run_devices(
                "printer", self.printers, work=self._work, check=self.check,
                every_s=self.settings.status_every_s, pending=self._pending, status=self._status,
            )  # fmt: skip
        finally:
            for printer in self.printers.values():
                printer.driver.close_idle_connection()

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
        now = dt.datetime.fromtimestamp(self._wall_clock()).strftime("%Y-%m-%d %H:%M:%S")
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
        """Print a test receipt through the printer's queue and keep its preview. Raises
        KeyError for an unknown printer and :class:`PrinterError` when it cannot print."""
        printer = self.printers[name]
        receipt = self.test_receipt(printer, by)
        job = await asyncio.to_thread(encode_receipt, receipt, printer.settings.profile)
        state = await self._console(printer, "test-print", PRIORITY_REPORT, job)
        printer.preview = await asyncio.to_thread(preview_png, job, printer.settings.columns)
        log.info("devices: test print on %s by %s", name, by)
        return state

    async def test_drawer(self, name: str, *, by: str) -> PrinterState:
        """Kick the drawer wired to the printer (its configured pin and pulse:
        :attr:`PrinterSettings.drawer`) through the printer's queue, as a technician's test.
        Raises KeyError for an unknown printer and :class:`PrinterError` when it cannot."""
        printer = self.printers[name]
        kick = drawer_kick(printer.settings, None)
        state = await self._console(printer, "test-drawer", PRIORITY_DRAWER, kick)
        log.info("devices: drawer test on %s by %s", name, by)
        return state

    async def _console(
        self, printer: Printer, what: str, priority: int, job: bytes
    ) -> PrinterState:
        name = printer.settings.name
        if not printer.online:
            await self.check(printer)  # just fixed? a real attempt, not the last verdict
        command = Command(
            command_id=f"console-{what}-{time.time_ns()}",
            lane=CONSOLE_LANE,
            device=name,
            kind="drawer" if what == "test-drawer" else "print",
            priority=priority,
            payload_digest=hashlib.sha256(job).hexdigest(),
            deadline=self._clock() + self.settings.timeout_s,
        )
        outcome, _ = await self._run(command, _Job(data=job))
        if isinstance(outcome, DeviceError):
            raise PrinterError(outcome.code, outcome.message)
        assert printer.state is not None  # a job done has read the state
        return printer.state


def drawer_kick(settings: PrinterSettings, pin: int | None) -> bytes:
    """``ESC p`` for the drawer on ``pin`` of this printer; None: the configured drawer.

    The configured drawer (``drawer_pin``, filled from the ``drawer`` profile) gets its own
    pulse; another pin, the python-escpos default (100 ms on, 100 ms off: peripherals.md §1.3)."""
    if pin is None or pin == settings.drawer_pin:
        return encode_drawer_kick(
            settings.drawer_pin, on_ms=settings.drawer_on_ms, off_ms=settings.drawer_off_ms
        )
    return encode_drawer_kick(pin)


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
