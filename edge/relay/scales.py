"""The store's serial scales as the lanes use them: a stable weight, zero, tare; one lane at a
time.

Theory of operation
-------------------
Each ``[[devices.scales]]`` is a serial line (a device path, or ``socket://host:port`` for a
serial-to-Ethernet adapter) spoken with one of the sans-IO codecs in :mod:`devices`
(:data:`PROTOCOLS`). The hub keeps the line open and sends one request at a time (a lock);
an answer is read until the codec yields a frame, bounded by ``devices.timeout_s``. A broken
line is reopened on the next request.

============  ==========================  =====  =====  ======================================
protocol      weight request              zero   tare   what a weight request is answered with
============  ==========================  =====  =====  ======================================
``toledo``    ``W`` (8217, §2.2)          ``Z``  ``T``  a stable weight, or a status: why not
``magellan``  ``S14 CR`` (monitor, §2.3)  --     --     a stable weight, or the scale's state
``cas``       ``DC1`` (ECR, §2.5)         --     --     a weight marked stable or unstable
``scp01``     ``W CR`` (NCI, §2.4)        ``Z``  --     a weight with its status bytes
============  ==========================  =====  =====  ======================================

Every answer becomes a :class:`devices.scale.Reading` (:func:`_as_reading`): the CAS and
SCP-01 codecs yield one already; a Toledo status or an SCP-01 status-only frame is a reading
without a weight. A command the protocol does not have is ``NOT_SUPPORTED`` without
touching the line; an SCP-01 scale answering ``?`` (a function disabled in its setup) is
``NOT_SUPPORTED`` too. A CAS ECR frame has no over-capacity flag (peripherals.md §2.5): an
overloaded CAS scale cannot be told from its answer.

*Weighing* (MQTT ``scale.weigh`` on the lane's scope): the hub polls the scale until it
reports a stable weight, up to ``settle_s``. Motion that does not settle is
``WEIGHT_UNSTABLE`` (retryable: ask the customer to stop touching the platter), over capacity
``OVER_CAPACITY``, below zero ``UNDER_ZERO``, an internal fault the scale reports (SCP-01:
memory, calibration, initial zero) ``SCALE_FAULT`` at once; a scale that does not answer is
``OFFLINE``. A weight is never guessed.

*Commands* go through :class:`edge.relay.core.Relay`, like a printer's: ``scale.weigh``,
``scale.zero`` and ``scale.tare`` are queued on the scale (one at a time, in arrival order,
a queued one answered ``TIMEOUT`` after ``devices.timeout_s``), run by the scale's worker,
and answered exactly once. A request with a ``command_id`` is de-duplicated by it: a re-send
(the lane's answer was lost) gets the first answer, so a weighing is not repeated and a tare
is not applied twice; a retryable error (nothing was done) runs again when re-sent. Without
a ``command_id`` every request runs.

*The claim* (:class:`edge.relay.core.ScaleClaim`, kept by the relay). A scale serves one lane
at a time: the first lane to weigh claims it; another lane gets ``CLAIMED_BY_OTHER_LANE``
until the holder releases it (``scale.release``), goes offline (its presence says so), or
leaves it idle for ``claim_ttl_s``.

*Status.* Every ``devices.status_every_s`` the hub sends each scale its weight request (the
table's second column: every protocol just answers it; never zero or tare, which would change
what the scale shows), under the scale's lock, so a check never comes between a weighing's
request and its answer. Every request counts, the lanes' too (:meth:`Scales._ask`): an answer
of any kind is a success, ``OFFLINE`` (the line does not open, or no answer within
``devices.timeout_s``) a miss; a scale that answered less than ``status_every_s`` ago is not
checked again. :class:`edge.relay.core.StatusDebouncer` declares a scale offline after
``devices.misses_to_offline`` misses in a row and online again after one answer. The status
is retained on ``store/{store}/device/{name}/status`` (:class:`edge.relay.status.DeviceStatus`,
``kind: "scale"``, with the lane holding it, and the over-capacity flag and faults of its last
answer), published when it changes and after every reconnection of the bus. A weighing is not
refused because the scale is offline (the relay is not told): it tries the line, which may be
back.

Calling contract: the scale's lock is held around every :meth:`Scales._ask`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

import msgspec
import serial_asyncio_fast

from devices import scale_cas, scale_scp01, scale_toledo
from devices.scale import Reading
from devices.scale_magellan import MONITOR, MagellanParser, MagellanState
from devices.scale_scp01 import CommandRejected, Scp01Status
from devices.scale_toledo import ToledoStatus
from edge.bus.client import Bus
from edge.bus.errors import RequestError
from edge.bus.rpc import RequestContext, RpcRouter, decode_data
from edge.bus.topics import Topics
from edge.relay.core import (
    DEVICE_ERROR_CODES,
    PRIORITY_SCALE,
    Command,
    CommandKind,
    Done,
    Outcome,
    Relay,
    StatusDebouncer,
    device_error,
)
from edge.relay.pending import Pending, answer, run_devices
from edge.relay.printers import CommandId, DeviceName
from edge.relay.status import DeviceStatus, StatusPublisher, rfc3339
from edge.settings import DevicesSettings, ScaleSettings

log = logging.getLogger(__name__)


class ScaleCodec(Protocol):
    def feed(self, data: bytes) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """How to speak one protocol: the requests and a fresh stream parser."""

    weigh: bytes
    zero: bytes | None
    tare: bytes | None
    parser: Callable[[str], ScaleCodec]

    def request(self, kind: CommandKind) -> bytes | None:
        """What to send for a command (None: the protocol has no such command)."""
        return {"weigh": self.weigh, "zero": self.zero, "tare": self.tare}.get(kind)


PROTOCOLS: Final[dict[str, Dialect]] = {
    "toledo": Dialect(
        scale_toledo.REQUEST_WEIGHT,
        scale_toledo.ZERO,
        scale_toledo.TARE,
        lambda unit: scale_toledo.ToledoParser(unit=unit),
    ),
    # The scale monitor (S14) always answers, with the state when there is no stable weight.
    "magellan": Dialect(MONITOR, None, None, lambda unit: MagellanParser(unit=unit)),  # type: ignore[arg-type]
    # The frame carries its own unit; the SW-II frame layout (EcrFormat's defaults).
    "cas": Dialect(scale_cas.REQUEST_WEIGHT, None, None, lambda unit: scale_cas.EcrParser()),
    # W is answered with the weight *and* its status bytes (motion, range, faults); no tare.
    "scp01": Dialect(
        scale_scp01.REQUEST_WEIGHT, scale_scp01.ZERO, None, lambda unit: scale_scp01.Scp01Parser()
    ),
}


class WeighRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``scale.weigh`` / ``scale.zero`` / ``scale.tare`` / ``scale.release`` data."""

    device: DeviceName
    command_id: CommandId | None = None
    """Created by the lane: a re-send with the same id gets the first answer (the weighing is
    not repeated, a tare not applied twice). Without it every request runs."""


@dataclass(slots=True)
class Scale:
    settings: ScaleSettings
    dialect: Dialect
    debounced: StatusDebouncer
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One request on the line at a time: a weighing (all its polls), zero, tare or a check."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a command is queued for the worker."""
    holder: str | None = None
    """The lane holding the scale as last published."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    codec: ScaleCodec | None = None
    answered_at: float | None = None
    """Monotonic time of the last answer (a check is not needed right after one)."""
    since: float = 0.0
    """Wall-clock time ``online`` last changed (for the status document)."""
    last_error: str | None = None
    over_capacity: bool = False
    """The last answer said over capacity."""
    faults: tuple[str, ...] = ()
    """The internal faults the last answer reported."""

    @property
    def online(self) -> bool:
        """Debounced (edge.relay.core.StatusDebouncer): False only after several misses."""
        return self.debounced.online

    @property
    def summary(self) -> str:
        if not self.online:
            return self.debounced.not_online_summary
        if self.faults:
            return f"faults: {', '.join(self.faults)}"
        return "over capacity" if self.over_capacity else "ready"


class Scales:
    """The scales of ``settings.scales``: RPC handlers, the claim, status (module docstring)."""

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
        self.scales: dict[str, Scale] = {}
        for s in settings.scales:
            self.relay.add_device(s.name, "scale", claim_ttl=s.claim_ttl_s)
            debouncer = StatusDebouncer(s.name, misses_to_offline=settings.misses_to_offline)
            self.scales[s.name] = Scale(s, PROTOCOLS[s.protocol], debouncer)
        self._pending: Pending[CommandKind] = Pending(self.relay, clock)
        self._unnamed = itertools.count(1)
        self._status = StatusPublisher(
            bus,
            topics,
            {name: functools.partial(self.status_document, scale)
             for name, scale in self.scales.items()},
            every_s=settings.status_every_s,
        )  # fmt: skip

    # -- the line --------------------------------------------------------------------------

    async def _open(self, scale: Scale) -> None:
        s = scale.settings
        try:
            scale.reader, scale.writer = await serial_asyncio_fast.open_serial_connection(
                url=s.port, baudrate=s.baudrate, bytesize=s.bytesize, parity=s.parity,
                stopbits=s.stopbits,
            )  # fmt: skip
        except (OSError, ValueError, termios.error) as exc:
            # termios.error: the port refuses the line settings (a pseudo-terminal or some USB
            # adapters refuse 7 data bits with parity): a configuration to fix, not a crash.
            raise RequestError(
                "OFFLINE", f"scale {s.name}: cannot open {s.port}: {exc}", retryable=True
            ) from None
        scale.codec = scale.dialect.parser(s.unit)

    def _close(self, scale: Scale) -> None:
        if scale.writer is not None:
            scale.writer.close()
        scale.reader = scale.writer = scale.codec = None

    async def _ask(self, scale: Scale, request: bytes) -> Any:
        """One request, its first decoded answer, observed for the status (module docstring,
        "Status"). Raises ``OFFLINE``. The caller holds ``scale.lock``."""
        try:
            answer = await self._exchange(scale, request)
        except RequestError as exc:
            self._observe(scale, None, exc.message)
            raise
        self._observe(scale, answer)
        return answer

    async def _exchange(self, scale: Scale, request: bytes) -> Any:
        if scale.writer is None:
            await self._open(scale)
        reader, writer, codec = scale.reader, scale.writer, scale.codec
        assert reader is not None
        assert writer is not None
        assert codec is not None
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                writer.write(request)
                await writer.drain()
                while True:
                    data = await reader.read(256)
                    if not data:
                        raise ConnectionError("the line closed")
                    if events := codec.feed(data):
                        return events[-1]
        except (TimeoutError, OSError, ConnectionError) as exc:
            self._close(scale)
            raise RequestError(
                "OFFLINE", f"scale {scale.settings.name} did not answer: {exc!r}", retryable=True
            ) from None

    async def aclose(self) -> None:
        for scale in self.scales.values():
            self._close(scale)

    # -- status ----------------------------------------------------------------------------

    def _observe(self, scale: Scale, answer: Any, error: str = "") -> None:
        """A request ended: the scale gave ``answer``, or nothing (None, ``error``). Feeds the
        debouncer and notes what to publish."""
        name = scale.settings.name
        now = self._clock()
        before = scale.debounced.status
        if answer is None:
            scale.last_error = error
            status = scale.debounced.missed(now)
        else:
            scale.last_error = None
            scale.answered_at = now
            reading = _as_reading(answer, scale.settings.unit)
            over = reading is not None and reading.over_capacity
            faults = tuple(sorted(reading.faults)) if reading is not None else ()
            if (over, faults) != (scale.over_capacity, scale.faults):
                scale.over_capacity, scale.faults = over, faults
                self._status.changed()
            status = scale.debounced.observe(True, now)
        if status is None:
            return
        if before is None or before.online != status.online:
            scale.since = self._wall_clock()
            if status.online:
                log.info("scales: %s online", name)
            else:
                log.warning("scales: %s offline: %s", name, error)
        self._status.changed()

    async def check(self, scale: Scale) -> None:
        """One status check: the weight request, under the lock (module docstring, "Status").
        Skipped when the scale answered less than ``status_every_s`` ago."""
        async with scale.lock:
            answered = scale.answered_at
            if answered is not None and self._clock() - answered < self.settings.status_every_s:
                return
            with contextlib.suppress(RequestError):  # observed by _ask
                await self._ask(scale, scale.dialect.weigh)

    def status_document(self, scale: Scale) -> DeviceStatus | None:
        """None until the first request ended: nothing to say yet."""
        if not scale.debounced.known:
            return None
        return DeviceStatus(
            device=scale.settings.name,
            kind="scale",
            online=scale.online,
            summary=scale.summary,
            since=rfc3339(scale.since),
            claimed_by=self.relay.scale_holder(scale.settings.name, self._clock()),
            over_capacity=scale.over_capacity,
            faults=list(scale.faults),
        )

    async def run(self) -> None:
        """Workers, status checks and publication. Runs until cancelled; closes the lines when
        it ends."""
        if not self.scales:
            return
        try:
            await run_devices(
                "scale", self.scales, work=self._work, check=self.check,
                every_s=self.settings.status_every_s, pending=self._pending, status=self._status,
            )  # fmt: skip
        finally:
            await self.aclose()

    # -- the claim -------------------------------------------------------------------------

    def _holder_changed(self, scale: Scale) -> None:
        """Publish the status when the lane holding the scale is not the one last published."""
        holder = self.relay.scale_holder(scale.settings.name, self._clock())
        if holder != scale.holder:
            if holder is not None:
                log.info("scales: %s claimed by lane %s", scale.settings.name, holder)
            scale.holder = holder
            self._status.changed()

    def release_lane(self, lane: str) -> None:
        """The lane went offline: its scales are free."""
        for name in self.relay.lane_disconnected(lane):
            log.info("scales: %s released by lane %s", name, lane)
            self._holder_changed(self.scales[name])

    # -- commands --------------------------------------------------------------------------

    def _scale(self, name: str) -> Scale:
        scale = self.scales.get(name)
        if scale is None:
            raise RequestError(
                "DEVICE_UNKNOWN", f"no scale {name!r}", retryable=False,
                details={"known": sorted(self.scales)},
            )  # fmt: skip
        return scale

    async def submit(
        self, kind: CommandKind, name: str, lane: str, command_id: str | None = None
    ) -> dict[str, Any]:
        """Queue a weigh, zero or tare on the scale and wait for its one answer (the reply
        data, with ``duplicate``); raises :class:`RequestError` with the device error."""
        scale = self._scale(name)
        if scale.dialect.request(kind) is None:
            raise _error("NOT_SUPPORTED", f"{scale.settings.protocol} has no {kind}")
        now = self._clock()
        command = Command(
            command_id=command_id or f"{lane}:{kind}:{next(self._unnamed)}",
            lane=lane,
            device=name,
            kind=kind,
            priority=PRIORITY_SCALE,
            payload_digest=hashlib.sha256(f"{kind} {name}".encode()).hexdigest(),
            deadline=now + self.settings.timeout_s,
        )
        outcome, duplicate = await self._pending.submit(command, kind, scale.wake)
        self._holder_changed(scale)
        reply = answer(command.command_id, outcome, duplicate=duplicate)
        if command_id is None:
            del reply["command_id"]
        return reply

    async def _work(self, scale: Scale) -> None:
        """The scale's worker: its queued commands, one at a time (module docstring)."""
        name = scale.settings.name
        while True:
            command, kind = await self._pending.next(name, scale.wake)
            self._holder_changed(scale)
            outcome: Outcome
            try:
                if kind == "weigh":
                    reading = await self._weigh(scale)
                    outcome = Done(
                        {"device": name, "weight": str(reading.weight), "unit": reading.unit,
                         "net": reading.net}
                    )  # fmt: skip
                else:
                    await self._command(scale, kind)
                    outcome = Done({"device": name, "done": kind})
            except RequestError as exc:
                outcome = device_error(exc.code, exc.message, device=name, **(exc.details or {}))
            self._pending.finish(command.command_id, outcome)

    async def _weigh(self, scale: Scale) -> Reading:
        """A stable, usable weight, or a :class:`RequestError` saying why not."""
        name = scale.settings.name
        async with scale.lock:
            deadline = self._clock() + scale.settings.settle_s
            while True:
                answer = await self._ask(scale, scale.dialect.weigh)
                if isinstance(answer, CommandRejected):
                    raise _error("NOT_SUPPORTED", "the scale rejected the weight request")
                reading = _as_reading(answer, scale.settings.unit)
                if reading is not None and reading.faults:
                    faults = sorted(reading.faults)
                    log.warning("devices: scale %s reports faults %s", name, ", ".join(faults))
                    raise _error(
                        "SCALE_FAULT",
                        f"the scale reports {', '.join(faults)}",
                        details={"faults": faults},
                    )
                if reading is not None and reading.over_capacity:
                    raise _error("OVER_CAPACITY", "over the scale's capacity")
                if reading is not None and reading.under_zero:
                    raise _error("UNDER_ZERO", "the scale reads below zero")
                if reading is not None and reading.usable:
                    return reading
                if self._clock() >= deadline:
                    raise _error("WEIGHT_UNSTABLE", "the weight did not settle")
                await asyncio.sleep(scale.settings.poll_s)

    async def _command(self, scale: Scale, which: CommandKind) -> None:
        request = scale.dialect.request(which)
        assert request is not None  # refused before it was queued
        async with scale.lock:
            answer = await self._ask(scale, request)
        if isinstance(answer, CommandRejected):  # SCP-01 "?": disabled in the scale's setup
            raise _error("NOT_SUPPORTED", f"the scale rejected {which}")
        if isinstance(answer, ToledoStatus) and answer.in_motion:
            # A Toledo answers Z and T with its status; a scale does not zero or tare a
            # moving load, so motion in that answer means it was not done.
            raise _error("WEIGHT_UNSTABLE", f"the platter is moving: the scale did not {which}")

    # -- the console -----------------------------------------------------------------------

    CONSOLE_LANE: Final = "console"
    """Who holds a scale while a technician reads it from the console (released at once)."""

    def devices(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [
            {
                "name": name,
                "kind": "scale",
                "online": scale.online,
                "summary": scale.summary
                + (
                    f", held by lane {holder}"
                    if (holder := self.relay.scale_holder(name, now))
                    else ""
                ),
                "address": scale.settings.port,
                "profile": scale.settings.profile or scale.settings.protocol,
                "actions": ["weigh"],
                "last_error": scale.last_error,
                "has_preview": False,
            }
            for name, scale in self.scales.items()
        ]  # fmt: skip

    async def read_for_console(self, name: str) -> dict[str, Any]:
        """One stable reading for a technician (``weight``, ``unit``, ``net``); a lane holding
        the scale keeps it (CLAIMED_BY_OTHER_LANE), and the console's own claim ends with the
        reading."""
        try:
            return await self.submit("weigh", name, self.CONSOLE_LANE)
        finally:
            if self.relay.release_scale(name, self.CONSOLE_LANE):
                self._holder_changed(self.scales[name])

    # -- MQTT ------------------------------------------------------------------------------

    def register_rpc(self, router: RpcRouter) -> None:
        router.register("lane", "scale.weigh", self._rpc_weigh)
        router.register("lane", "scale.zero", self._rpc_zero)
        router.register("lane", "scale.tare", self._rpc_tare)
        router.register("lane", "scale.release", self._rpc_release)

    async def _rpc_weigh(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        return await self._rpc("weigh", ctx, data)

    async def _rpc_zero(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        return await self._rpc("zero", ctx, data)

    async def _rpc_tare(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        return await self._rpc("tare", ctx, data)

    async def _rpc(self, kind: CommandKind, ctx: RequestContext, data: msgspec.Raw) -> Any:
        request = decode_data(data, WeighRequest)
        assert ctx.lane is not None
        return await self.submit(kind, request.device, ctx.lane, request.command_id)

    async def _rpc_release(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        request = decode_data(data, WeighRequest)
        scale = self._scale(request.device)
        assert ctx.lane is not None
        if self.relay.release_scale(request.device, ctx.lane):
            log.info("scales: %s released by lane %s", request.device, ctx.lane)
            self._holder_changed(scale)
        return {"device": request.device, "released": True}


def _error(code: str, message: str, details: dict[str, Any] | None = None) -> RequestError:
    return RequestError(code, message, retryable=DEVICE_ERROR_CODES[code][0], details=details)


def _as_reading(answer: Any, unit: str) -> Reading | None:
    """A codec's answer as a reading (None: a state that is no weight yet)."""
    if isinstance(answer, Reading):
        return answer
    if isinstance(answer, ToledoStatus):
        return Reading(
            weight=Decimal(0), unit=unit, stable=not answer.in_motion,
            over_capacity=answer.over_capacity, under_zero=answer.under_zero,
        ) if (answer.in_motion or answer.over_capacity or answer.under_zero) else None  # fmt: skip
    if isinstance(answer, Scp01Status):  # a status-only frame: never a weight
        return Reading(
            weight=Decimal(0), unit=unit, stable=not answer.in_motion,
            over_capacity=answer.over_capacity, under_zero=answer.under_capacity,
            faults=answer.faults,
        ) if (answer.in_motion or answer.over_capacity or answer.under_capacity
              or answer.faults) else None  # fmt: skip
    if isinstance(answer, MagellanState):
        return None
    return None
