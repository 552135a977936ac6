"""The store's customer displays as the lanes use them: ``display.show``.

Theory of operation
-------------------
Each ``[[devices.displays]]`` is a serial line (a device path, or ``socket://host:port`` for a
serial-to-Ethernet adapter) to an Epson DM-D class display, spoken with the sans-IO codec
:mod:`devices.display_dmd` through pyserial-asyncio-fast. The decisions are
:class:`edge.relay.core.Relay`'s (priority ``display``): this module only does the I/O.

*A command* (MQTT ``display.show`` on the lane's scope, docs/protocol.md §10): ``lines``
(at most the display's ``rows``; more is ``SCHEMA_INVALID``) written from the top row,
after clearing the screen unless ``clear`` is false. Text is fitted by the codec: one
character per column, a character the display's code page lacks written without its accent
or as ``?``, control characters as ``?``; **a line longer than the display is truncated**,
not refused (a long product name must not stop a sale), and the reply says so
(``truncated``) next to the lines as ``shown``.

1. The request is decoded (``SCHEMA_INVALID``) and submitted to the relay core with a
   digest of its content and a deadline ``devices.timeout_s`` away: a new ``command_id`` is
   queued; a re-send of one queued or running waits for the same outcome; a re-send of one
   that finished gets its answer again with ``duplicate: true`` and nothing is written twice;
   the same id with other content is ``COMMAND_ID_CONFLICT``; ``DEVICE_UNKNOWN``,
   ``OFFLINE`` (the display is known to be gone) and ``QUEUE_FULL`` are refused at once.
2. One worker per display takes the next command (:meth:`Relay.next_for`), writes its bytes
   (opening the line first if it is closed, and then initializing the display:
   :func:`devices.display_dmd.encode_setup`), bounded by ``devices.timeout_s``, and reports
   the outcome with :meth:`Relay.finish`. A line that cannot be opened or written is
   ``OFFLINE`` (retryable: the lane re-sends; re-showing a screen is harmless) and is
   reopened by the next command.
3. A command still queued at its deadline is answered ``TIMEOUT`` (:meth:`Relay.expired`,
   on a half-second timer).

*Status.* The DM-D command set has no status request: a display only receives
(peripherals.md §3.1). So the hub reports the link: every ``devices.status_every_s`` it
writes ``US C 0`` (cursor off: already the state, nothing visible changes) and a display
whose line does not open or take the bytes has missed a check; every command counts the
same way. :class:`edge.relay.core.StatusDebouncer` declares it offline after
``devices.misses_to_offline`` misses in a row (the relay then answers its queued commands
``OFFLINE``) and online again after one success. The status is retained on
``store/{store}/device/{name}/status`` (:class:`edge.relay.status.DeviceStatus`,
``kind: "display"``), published when it changes and after every reconnection of the bus.
A display powered off at the end of a plain RS-232 cable still takes bytes: the hub cannot
see that, and says so in the docs (a USB-serial display unplugged is seen at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import msgspec
import serial_asyncio_fast

from devices.display_dmd import CURSOR_OFF, encode_setup, encode_text, fit_line
from edge.bus.client import Bus
from edge.bus.errors import ErrorCode, RequestError
from edge.bus.rpc import RequestContext, RpcRouter, decode_data
from edge.bus.topics import Topics
from edge.relay.core import (
    PRIORITY_DISPLAY,
    Command,
    Done,
    Outcome,
    PublishedStatus,
    Relay,
    StatusDebouncer,
    device_error,
)
from edge.relay.pending import Pending, answer, run_devices
from edge.relay.printers import CommandId, DeviceName
from edge.relay.status import DeviceStatus, StatusPublisher, rfc3339
from edge.settings import DevicesSettings, DisplaySettings

log = logging.getLogger(__name__)

MAX_LINES: Final = 8
"""The schema's bound; the display's own ``rows`` is checked after decoding."""

Line = Annotated[str, msgspec.Meta(max_length=200)]


class ShowRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``display.show`` data."""

    command_id: CommandId
    """Created by the lane; a re-send of the same command carries the same id."""
    device: DeviceName
    lines: Annotated[list[Line], msgspec.Meta(max_length=MAX_LINES)]
    """From the top row down, at most the display's rows; longer text is truncated."""
    clear: bool = True
    """Clear the screen first (rows without a line are blank); false rewrites only the rows
    given."""


@dataclass(slots=True)
class Display:
    settings: DisplaySettings
    debounced: StatusDebouncer
    since: float = 0.0
    """Wall-clock time ``online`` last changed (for the status document)."""
    last_error: str | None = None
    writer: asyncio.StreamWriter | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One writer on the line at a time: a command or a status check."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a command is queued for this display."""

    @property
    def online(self) -> bool:
        return self.debounced.online

    @property
    def summary(self) -> str:
        return "ready" if self.online else self.debounced.not_online_summary

    def status_document(self) -> DeviceStatus | None:
        """None until the first check ended: nothing to say yet."""
        if not self.debounced.known:
            return None
        return DeviceStatus(
            device=self.settings.name,
            kind="display",
            online=self.online,
            summary=self.summary,
            since=rfc3339(self.since),
        )


@dataclass(frozen=True, slots=True)
class _Job:
    data: bytes
    detail: dict[str, Any]


class Displays:
    """The displays of ``settings.displays``: RPC handler, workers, status (module docstring)."""

    def __init__(
        self,
        settings: DevicesSettings,
        bus: Bus | None,
        topics: Topics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self.relay = Relay()
        self.displays: dict[str, Display] = {}
        for s in settings.displays:
            self.relay.add_device(s.name, "display")
            debouncer = StatusDebouncer(s.name, misses_to_offline=settings.misses_to_offline)
            self.displays[s.name] = Display(s, debouncer)
        self._pending: Pending[_Job | None] = Pending(self.relay, clock)
        self._status = StatusPublisher(
            bus,
            topics,
            {name: d.status_document for name, d in self.displays.items()},
            every_s=settings.status_every_s,
        )

    # -- the lanes' commands ---------------------------------------------------------------

    def register_rpc(self, router: RpcRouter) -> None:
        router.register("lane", "display.show", self._rpc_show)

    async def _rpc_show(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        request = decode_data(data, ShowRequest)
        assert ctx.lane is not None
        return await self.show(request, ctx.lane)

    def devices(self) -> list[dict[str, Any]]:
        """For the console's Devices page."""
        return [
            {
                "name": name,
                "kind": "display",
                "online": d.online,
                "summary": d.summary,
                "address": d.settings.port,
                "profile": d.settings.profile or d.settings.protocol,
                "actions": ["test-display"],
                "last_error": d.last_error,
                "has_preview": False,
            }
            for name, d in self.displays.items()
        ]

    async def test(self, name: str, *, by: str) -> dict[str, Any]:
        """Show a test text on a display, for a technician (raises RequestError)."""
        request = ShowRequest(
            command_id=f"console-test-{time.time_ns()}",
            device=name,
            lines=["store-edge test", f"by {by}"][: self.displays[name].settings.rows],
        )
        shown = await self.show(request, "console")
        log.info("devices: display test on %s by %s", name, by)
        return shown

    async def show(self, request: ShowRequest, lane: str) -> dict[str, Any]:
        """Steps 1-3 of the module docstring; raises :class:`RequestError` for every error."""
        display = self.displays.get(request.device)
        if display is not None and len(request.lines) > display.settings.rows:
            rows = display.settings.rows
            raise RequestError(
                ErrorCode.SCHEMA_INVALID,
                f"{len(request.lines)} lines for display {request.device}, which has {rows} rows",
                details={"rows": rows, "lines": len(request.lines)},
            )
        now = self._clock()
        command = Command(
            command_id=request.command_id,
            lane=lane,
            device=request.device,
            kind="display",
            priority=PRIORITY_DISPLAY,
            payload_digest=hashlib.sha256(msgspec.json.encode(request)).hexdigest(),
            deadline=now + self.settings.timeout_s,
        )
        if display is None:  # refused by the relay core (DEVICE_UNKNOWN): no job to make
            outcome, duplicate = await self._pending.submit(command, None, None)
        else:
            job = self._job(display, request)
            outcome, duplicate = await self._pending.submit(command, job, display.wake)
        return answer(request.command_id, outcome, duplicate=duplicate)

    @staticmethod
    def _job(display: Display, request: ShowRequest) -> _Job:
        s = display.settings
        fitted = [fit_line(text, width=s.columns, encoding=s.encoding) for text in request.lines]
        lines = [line for line, _ in fitted]
        data = encode_text(lines, columns=s.columns, rows=s.rows, clear=request.clear)
        shown = [line.decode(s.encoding, errors="replace").rstrip(" ") for line in lines]
        detail = {"device": s.name, "shown": shown, "truncated": any(cut for _, cut in fitted)}
        return _Job(data, detail)

    async def _write(self, display: Display, data: bytes) -> None:
        """Write ``data`` (opening and initializing the line first if needed), bounded by
        ``devices.timeout_s``. Raises ``OFFLINE`` as a :class:`DeviceError` value wrapped in
        :class:`_LinkDown`. The caller holds ``display.lock``."""
        s = display.settings
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                if display.writer is not None and display.writer.transport.is_closing():
                    self._close(display)  # it failed since: reopen (it may be back)
                if display.writer is None:
                    _, display.writer = await serial_asyncio_fast.open_serial_connection(
                        url=s.port, baudrate=s.baudrate, bytesize=s.bytesize, parity=s.parity,
                        stopbits=s.stopbits,
                    )  # fmt: skip
                    data = encode_setup(s.code_table) + data
                display.writer.write(data)
                await display.writer.drain()
                # pyserial-asyncio-fast writes at once; a failed write aborts the transport
                # (closing at once) but drain() may return before the connection is lost.
                if display.writer.transport.is_closing():
                    raise ConnectionError("the line failed while writing")
        except (OSError, TimeoutError, ValueError, termios.error) as exc:
            # ValueError: pyserial refuses the line settings (or the URL) for this port;
            # termios.error: the port itself refuses them (e.g. 7 data bits on a pty).
            self._close(display)
            raise _LinkDown(f"display {s.name}: {s.port}: {exc!r}") from None

    def _close(self, display: Display) -> None:
        if display.writer is not None:
            display.writer.close()
        display.writer = None

    def _observe(self, display: Display, ok: bool, error: str | None = None) -> None:
        """A write succeeded or failed: feed the debouncer, publish and tell the relay."""
        was_online = display.online
        display.last_error = error
        now = self._clock()
        status: PublishedStatus | None = display.debounced.observe(ok, now)
        if status is None:
            return
        if status.online != was_online or display.since == 0.0:
            display.since = self._wall_clock()
        if status.online != was_online:
            name = display.settings.name
            if status.online:
                log.info("displays: %s online", name)
            else:
                log.warning("displays: %s offline: %s", name, error)
            self._pending.resolve(self.relay.set_online(name, status.online, now))
        self._status.changed()

    async def check(self, display: Display) -> None:
        """One status check (module docstring, "Status")."""
        async with display.lock:
            try:
                await self._write(display, CURSOR_OFF)
            except _LinkDown as exc:
                self._observe(display, False, str(exc))
                return
        self._observe(display, True)

    # -- running ---------------------------------------------------------------------------

    async def _work(self, display: Display) -> None:
        name = display.settings.name
        while True:
            command, job = await self._pending.next(name, display.wake)
            assert job is not None  # only a configured display's commands are queued
            outcome: Outcome
            async with display.lock:
                try:
                    await self._write(display, job.data)
                except _LinkDown as exc:
                    outcome = device_error("OFFLINE", str(exc), device=name)
                    self._observe(display, False, str(exc))
                else:
                    outcome = Done(job.detail)
                    self._observe(display, True)
            self._pending.finish(command.command_id, outcome)

    async def run(self) -> None:
        """Workers, status checks and publication. Runs until cancelled."""
        if not self.displays:
            return
        try:
            await run_devices(
                "display", self.displays, work=self._work, check=self.check,
                every_s=self.settings.status_every_s, pending=self._pending, status=self._status,
            )  # fmt: skip
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        for display in self.displays.values():
            self._close(display)


class _LinkDown(Exception):
    """The display's line did not open or take the bytes."""
