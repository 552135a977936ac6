"""The relay's decision core: which lane command runs next on which device, and what each
lane is answered. Pure (no asyncio, no I/O, no clock reads): time comes in as ``now``.

Theory of operation
-------------------
A lane sends a :class:`Command` for a shared device (docs/design.md, data flow 4). The shell
calls :meth:`Relay.submit`, which decides at once (:data:`Decision`):

* :class:`Enqueued` - queued on the device; the lane is answered later, exactly once.
* :class:`Duplicate` - the same ``command_id`` with the same content is already queued or
  running (``in_progress``: the shell answers the re-send with the original's outcome when
  that arrives), or already finished (``outcome``: the original answer, never a second run).
* :class:`Conflict` - the same ``command_id`` was used for other content (another payload
  digest, lane, device or kind): ``COMMAND_ID_CONFLICT``, never run.
* :class:`Refused` - not queued, nothing was done: ``DEVICE_UNKNOWN``, ``NOT_SUPPORTED`` (that
  device cannot do that kind), ``OFFLINE`` (the device is gone), ``TIMEOUT`` (the deadline has
  already passed), ``QUEUE_FULL``, ``CLAIMED_BY_OTHER_LANE`` (a scale held by another lane).
  A refusal is not remembered: the lane may send the same command again.

Each device runs one command at a time. The shell's worker for a device calls
:meth:`Relay.next_for` (highest priority first, FIFO among equals; ``None`` while one is running
or nothing is queued), executes it, then calls :meth:`Relay.finish` with the :data:`Outcome`,
always, also when the driver raised. Commands whose deadline passed while queued are never
started (``next_for`` skips them): :meth:`Relay.expired`, called on a timer, takes them out of
their queue and hands each to the shell once with its ``TIMEOUT`` outcome. Until then such a
command still counts as queued, so a re-send meanwhile is a :class:`Duplicate` that shares
that answer, never a second attempt racing the first one's answer. Commands queued on a
device that goes offline get ``OFFLINE``, handed to the shell by the :meth:`Relay.set_online`
call that took it offline. So every :class:`Enqueued` attempt gets exactly one outcome, from
exactly one of ``finish``, ``expired`` or ``set_online``, and a second ``finish`` for the same
id is ignored (and reported).

*Retryable errors start a new attempt.* docs/protocol.md section 10: a lane re-sends the same
command after a timeout or a retryable error. A finished command whose outcome is
:class:`Done` or a non-retryable :class:`DeviceError` is answered again, as it was, to any
re-send; one whose outcome is a retryable error (nothing was done: paper out, offline, timed
out in the queue) is queued again by a re-send with the same content (``Enqueued.attempt``
counts). The shell must therefore mark an error retryable only when the device did nothing.

*Bounded memory.* Finished outcomes are kept for ``dedupe_ttl`` seconds (default a day) and at
most ``dedupe_limit`` of them, the oldest forgotten first; a re-send after that runs again.
Queues hold at most ``queue_limit`` commands per device. A running command is not timed out
here: its deadline bounds only the wait in the queue; the shell bounds the execution with its
driver's timeout and reports the result through ``finish``.

*Device status* is debounced by :class:`StatusDebouncer` (offline only after
``misses_to_offline`` missed checks in a row, online again after one answer; a status to publish
only when it changes); the shell tells the relay with :meth:`Relay.set_online`.

*Scales* are held by one lane at a time (:class:`ScaleClaim`): the first ``weigh``/``tare``/
``zero`` claims the scale; other lanes are refused ``CLAIMED_BY_OTHER_LANE`` until the holder
releases it, disconnects, or leaves it idle for ``claim_ttl`` seconds (a claim is not idle while
the holder has a command queued or running on it).

Calling contract: ``now`` never goes backwards (the shell passes ``time.monotonic()``).

Errors
------
Outcomes and refusals are values (:class:`DeviceError`, stable ``code`` from
:data:`DEVICE_ERROR_CODES`), never raised. A call that breaks the calling contract (an unknown
device name to :meth:`Relay.next_for`, a device added twice, a nonsensical limit) raises
:class:`RelayUsageError`: a bug in the shell, not a device condition.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "CLAIMED_KINDS",
    "COMMAND_KINDS_FOR_DEVICE",
    "DEVICE_ERROR_CODES",
    "PRIORITY_DISPLAY",
    "PRIORITY_DRAWER",
    "PRIORITY_RECEIPT",
    "PRIORITY_REPORT",
    "PRIORITY_SCALE",
    "Command",
    "CommandKind",
    "Conflict",
    "Decision",
    "DeviceError",
    "DeviceFlags",
    "DeviceKind",
    "Done",
    "Duplicate",
    "Enqueued",
    "FinishResult",
    "Outcome",
    "PublishedStatus",
    "Refused",
    "Relay",
    "RelayUsageError",
    "ScaleClaim",
    "StatusDebouncer",
    "device_error",
]

CommandKind: TypeAlias = Literal["print", "drawer", "display", "weigh", "tare", "zero", "status"]
DeviceKind: TypeAlias = Literal["printer", "drawer", "display", "scale"]

#: Lower runs first. A customer's receipt before a drawer kick before the display before an
#: end-of-day report.
PRIORITY_RECEIPT: Final = 0
PRIORITY_DRAWER: Final = 1
PRIORITY_DISPLAY: Final = 2
PRIORITY_REPORT: Final = 3
#: A scale's weigh, zero and tare (a scale has a queue of its own: FIFO).
PRIORITY_SCALE: Final = 0

#: What each kind of device can do. A drawer is also kicked through the printer it is wired to.
COMMAND_KINDS_FOR_DEVICE: Final[Mapping[DeviceKind, frozenset[CommandKind]]] = {
    "printer": frozenset({"print", "drawer", "status"}),
    "drawer": frozenset({"drawer", "status"}),
    "display": frozenset({"display", "status"}),
    "scale": frozenset({"weigh", "tare", "zero", "status"}),
}

#: Commands that need the scale's claim (a status read does not).
CLAIMED_KINDS: Final[frozenset[CommandKind]] = frozenset({"weigh", "tare", "zero"})

#: code -> (retryable, meaning), in the form of edge.bus.errors.ERROR_CODES and matching the
#: codes edge.relay.printers and edge.relay.scales already answer (docs/protocol.md §10).
DEVICE_ERROR_CODES: Final[Mapping[str, tuple[bool, str]]] = {
    "DEVICE_UNKNOWN": (False, "No shared device of that name is configured on the hub."),
    "NOT_SUPPORTED": (False, "This device cannot do that kind of command."),
    "OFFLINE": (True, "The device does not answer; nothing was done."),
    "PAPER_OUT": (True, "The printer is out of paper; nothing was printed."),
    "COVER_OPEN": (True, "The printer's cover is open; nothing was printed."),
    "PRINTER_ERROR": (True, "The printer reports an error (cutter, jam); nothing was printed."),
    "PAPER_OUT_DURING_JOB": (
        False,
        "The paper ran out during the job: the printer prints the rest once paper is loaded. "
        "Do not send it again (a re-send gets this answer, never a second print).",
    ),
    "UNCONFIRMED": (
        False,
        "The job reached the printer, which stopped answering before confirming it: check "
        "the printout before printing again (a re-send gets this answer, never a second print).",
    ),
    "WEIGHT_UNSTABLE": (True, "The weight did not settle; keep the platter still and retry."),
    "OVER_CAPACITY": (False, "The load is over the scale's capacity."),
    "UNDER_ZERO": (True, "The scale reads below zero; clear the platter and zero it."),
    "SCALE_FAULT": (
        False,
        "The scale reports an internal fault (memory, calibration, initial zero): it needs a "
        "technician, not a retry. details.faults names them.",
    ),
    "CLAIMED_BY_OTHER_LANE": (True, "Another lane is using the scale; retry when it is done."),
    "TIMEOUT": (True, "The command's deadline passed before the device could run it."),
    "QUEUE_FULL": (True, "Too many commands are waiting for this device; retry shortly."),
    "COMMAND_ID_CONFLICT": (False, "This command_id was already used for a different command."),
}


class RelayUsageError(Exception):
    """The shell called the relay core against its calling contract (a bug, not retryable)."""


# -- commands and outcomes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """One lane's command for one shared device."""

    command_id: str
    """Created by the lane; a re-send of the same command carries the same id."""
    lane: str
    device: str
    kind: CommandKind
    priority: int
    """``PRIORITY_*``; lower runs first."""
    payload_digest: str
    """A hash of the payload: the same id with another digest is a conflict, not a re-send."""
    deadline: float
    """Absolute, on the same clock as ``now``: not started at or after this instant."""


@dataclass(frozen=True, slots=True)
class Done:
    """The device did it. ``detail`` is what the shell answers (e.g. a weight, a state)."""

    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceError:
    """The device did not do it, or the relay refused it. ``code`` is stable."""

    code: str
    retryable: bool
    """True only when nothing was done and the same command may succeed later."""
    message: str
    device: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


Outcome: TypeAlias = Done | DeviceError


def device_error(
    code: str, message: str | None = None, *, device: str | None = None, **details: Any
) -> DeviceError:
    """A :class:`DeviceError` for a code of :data:`DEVICE_ERROR_CODES`, retryable as listed."""
    try:
        retryable, meaning = DEVICE_ERROR_CODES[code]
    except KeyError:
        raise RelayUsageError(f"unknown device error code {code!r}") from None
    return DeviceError(code, retryable, message or meaning, device, details)


@dataclass(frozen=True, slots=True)
class Enqueued:
    command_id: str
    attempt: int
    """1 for the first run; more when a re-send follows a retryable error."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    command_id: str
    in_progress: bool
    """True: the original is queued or running; answer this re-send with its outcome."""
    outcome: Outcome | None
    """The original's outcome when it has finished (``in_progress`` is then False)."""


@dataclass(frozen=True, slots=True)
class Conflict:
    command_id: str
    error: DeviceError
    """Always ``COMMAND_ID_CONFLICT``."""


@dataclass(frozen=True, slots=True)
class Refused:
    command_id: str
    error: DeviceError


Decision: TypeAlias = Enqueued | Duplicate | Conflict | Refused

FinishResult: TypeAlias = Literal["recorded", "already_finished", "unknown"]
"""``recorded``: the outcome is this attempt's answer. ``already_finished``: the id already had
an outcome (a second finish, or a finish after a timeout); ignored. ``unknown``: no such id is
queued, running or remembered; ignored."""


# -- device status -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceFlags:
    """Conditions from the device's latest status answer."""

    paper_near_end: bool = False
    paper_out: bool = False
    cover_open: bool = False
    drawer_open: bool = False


@dataclass(frozen=True, slots=True)
class PublishedStatus:
    """What the shell retains on the device's status topic."""

    device: str
    online: bool
    """Debounced: False only after ``misses_to_offline`` missed checks in a row."""
    flags: DeviceFlags
    """From the latest answer (kept, as last known, while offline)."""
    since: float
    """When ``online`` last changed."""


class StatusDebouncer:
    """One device's published status, debounced (a printer busy cutting must not flap the
    lanes' status).

    Before the first answer nothing is published; ``misses_to_offline`` missed checks in a row
    publish offline; a single answer publishes online. :meth:`observe` and :meth:`missed`
    return the new status only when what is published should change, else ``None``.
    """

    def __init__(self, device: str, *, misses_to_offline: int = 3) -> None:
        if misses_to_offline < 1:
            raise RelayUsageError(f"misses_to_offline must be at least 1, not {misses_to_offline}")
        self.device = device
        self.misses_to_offline = misses_to_offline
        self.misses = 0
        """Missed checks in a row."""
        self._flags = DeviceFlags()
        self._published: PublishedStatus | None = None

    @property
    def status(self) -> PublishedStatus | None:
        """The status to retain (publish again after a reconnection); None: not known yet."""
        return self._published

    @property
    def online(self) -> bool:
        """Debounced: False only after several misses (or before the first answer)."""
        return self._published is not None and self._published.online

    @property
    def known(self) -> bool:
        """Has any check ended yet (answered or missed)?"""
        return self._published is not None or self.misses > 0

    @property
    def not_online_summary(self) -> str:
        """What a device that is not :attr:`online` shows: offline, or not checked yet."""
        return "offline" if self.known else "not checked yet"

    def observe(
        self, ok: bool, now: float, flags: DeviceFlags | None = None
    ) -> PublishedStatus | None:
        """A check ended: ``ok`` (it answered, with ``flags``) or not (same as :meth:`missed`)."""
        if not ok:
            return self.missed(now)
        self.misses = 0
        self._flags = flags if flags is not None else DeviceFlags()
        return self._publish(True, now)

    def missed(self, now: float) -> PublishedStatus | None:
        """A check got no answer."""
        self.misses += 1
        if self.misses < self.misses_to_offline:
            return None
        return self._publish(False, now)

    def _publish(self, online: bool, now: float) -> PublishedStatus | None:
        before = self._published
        since = now if before is None or before.online != online else before.since
        status = PublishedStatus(self.device, online, self._flags, since)
        if status == before:
            return None
        self._published = status
        return status


# -- scale claims ------------------------------------------------------------------------------


class ScaleClaim:
    """Which lane holds one scale. A claim lapses after ``claim_ttl`` idle seconds."""

    def __init__(self, device: str, *, claim_ttl: float = 30.0) -> None:
        if claim_ttl <= 0:
            raise RelayUsageError(f"claim_ttl must be positive, not {claim_ttl}")
        self.device = device
        self.claim_ttl = claim_ttl
        self._holder: str | None = None
        self._last_used = 0.0

    def holder(self, now: float) -> str | None:
        """The lane holding the scale at ``now``, if any."""
        if self._holder is not None and now >= self._last_used + self.claim_ttl:
            return None
        return self._holder

    @property
    def last_holder(self) -> str | None:
        """The lane that claimed the scale last, even if its claim has lapsed since."""
        return self._holder

    def claim(self, lane: str, now: float) -> bool | DeviceError:
        """Claim (or keep) the scale for ``lane``: True when newly claimed, False when ``lane``
        already held it (the idle timer restarts), ``CLAIMED_BY_OTHER_LANE`` when another lane
        holds it (``details.holder`` names it: lanes of one store may know each other)."""
        holder = self.holder(now)
        if holder is None:
            self._holder, self._last_used = lane, now
            return True
        if holder == lane:
            self._last_used = now
            return False
        return device_error(
            "CLAIMED_BY_OTHER_LANE",
            f"scale {self.device} is in use by lane {holder}",
            device=self.device,
            holder=holder,
        )

    def touch(self, lane: str, now: float) -> None:
        """``lane`` is using the scale: restart the idle timer if it was the last to claim it
        (use keeps a claim alive, and revives a lapsed one nobody else has taken since)."""
        if self._holder == lane:
            self._last_used = now

    def release(self, lane: str) -> bool:
        """``lane`` is done with the scale. True if it held it; a non-holder changes nothing."""
        if self._holder != lane:
            return False
        self._holder = None
        return True

    def lane_disconnected(self, lane: str) -> bool:
        """The lane's presence went offline: its claim ends (same as :meth:`release`)."""
        return self.release(lane)


# -- the relay ---------------------------------------------------------------------------------

_Fingerprint: TypeAlias = tuple[str, str, str, str]


def _fingerprint(cmd: Command) -> _Fingerprint:
    # What makes a re-send "the same command". Priority and deadline are not in it: a re-send
    # carries a fresh deadline.
    return (cmd.lane, cmd.device, cmd.kind, cmd.payload_digest)


def _is_final(outcome: Outcome) -> bool:
    return isinstance(outcome, Done) or not outcome.retryable


@dataclass(slots=True)
class _Pending:
    command: Command
    attempt: int
    running: bool = False


@dataclass(frozen=True, slots=True)
class _Finished:
    fingerprint: _Fingerprint
    attempt: int
    outcome: Outcome
    finished_at: float


@dataclass(slots=True)
class _Device:
    name: str
    kind: DeviceKind
    online: bool = True
    queue: list[tuple[int, int, Command]] = field(default_factory=list)
    """Sorted by (priority, arrival): the head runs next."""
    running: Command | None = None
    claim: ScaleClaim | None = None


class Relay:
    """The relay's state: devices, their queues, the de-duplication memory, scale claims.

    See the module docstring for the theory of operation and the calling contract.
    """

    def __init__(
        self,
        *,
        queue_limit: int = 100,
        dedupe_ttl: float = 24 * 3600.0,
        dedupe_limit: int = 10_000,
        claim_ttl: float = 30.0,
    ) -> None:
        if queue_limit < 1 or dedupe_limit < 1 or dedupe_ttl <= 0 or claim_ttl <= 0:
            raise RelayUsageError("queue_limit, dedupe_limit, dedupe_ttl and claim_ttl must be > 0")
        self.queue_limit = queue_limit
        self.dedupe_ttl = dedupe_ttl
        self.dedupe_limit = dedupe_limit
        self.claim_ttl = claim_ttl
        self._devices: dict[str, _Device] = {}
        self._pending: dict[str, _Pending] = {}
        self._finished: OrderedDict[str, _Finished] = OrderedDict()
        """In the order they finished: the oldest is forgotten first."""
        self._arrival = itertools.count()

    # -- devices -------------------------------------------------------------------------------

    def add_device(self, name: str, kind: DeviceKind, *, claim_ttl: float | None = None) -> None:
        """Configure a shared device (online until :meth:`set_online` says otherwise); a
        scale's claim lapses after ``claim_ttl`` idle seconds (default: the relay's)."""
        if name in self._devices:
            raise RelayUsageError(f"device {name!r} was already added")
        if kind not in COMMAND_KINDS_FOR_DEVICE:
            raise RelayUsageError(f"unknown device kind {kind!r}")
        ttl = self.claim_ttl if claim_ttl is None else claim_ttl
        claim = ScaleClaim(name, claim_ttl=ttl) if kind == "scale" else None
        self._devices[name] = _Device(name, kind, claim=claim)

    @property
    def devices(self) -> dict[str, DeviceKind]:
        return {name: device.kind for name, device in self._devices.items()}

    def set_online(self, device: str, online: bool, now: float) -> list[tuple[Command, Outcome]]:
        """The device's debounced status changed. Going offline fails every queued command with
        ``OFFLINE``: returned here, to be answered by the shell (exactly once: they are not
        returned again). A running command is left to the shell, which must ``finish`` it."""
        dev = self._device(device)
        dev.online = online
        if online:
            return []
        error = device_error("OFFLINE", f"device {device} went offline", device=device)
        failed = [(cmd, self._record(cmd, error, now)) for _, _, cmd in dev.queue]
        dev.queue.clear()
        return failed

    def release_scale(self, device: str, lane: str) -> bool:
        """``scale.release`` from ``lane``: True if it held the scale."""
        claim = self._device(device).claim
        return claim is not None and claim.release(lane)

    def lane_disconnected(self, lane: str) -> list[str]:
        """The lane's presence went offline: it releases every scale it held (returned).
        Its queued commands still run (a receipt still prints)."""
        return [
            dev.name
            for dev in self._devices.values()
            if dev.claim is not None and dev.claim.lane_disconnected(lane)
        ]

    def scale_holder(self, device: str, now: float) -> str | None:
        claim = self._device(device).claim
        return claim.holder(now) if claim is not None else None

    # -- commands ------------------------------------------------------------------------------

    def submit(self, cmd: Command, now: float) -> Decision:
        """Decide what to do with a lane's command (module docstring: the four decisions)."""
        self._forget(now)
        cid = cmd.command_id
        attempt = 1
        pending = self._pending.get(cid)
        if pending is not None:
            if _fingerprint(pending.command) != _fingerprint(cmd):
                return self._conflict(cmd)
            return Duplicate(cid, in_progress=True, outcome=None)
        finished = self._finished.get(cid)
        if finished is not None:
            if finished.fingerprint != _fingerprint(cmd):
                return self._conflict(cmd)
            if _is_final(finished.outcome):
                return Duplicate(cid, in_progress=False, outcome=finished.outcome)
            attempt = finished.attempt + 1  # nothing was done last time: run it again

        refusal = self._refusal(cmd, now)
        if refusal is not None:
            return Refused(cid, refusal)
        dev = self._devices[cmd.device]
        # A scale's claim is taken last, only by a command that is really queued.
        if cmd.kind in CLAIMED_KINDS and dev.claim is not None:
            holder = dev.claim.last_holder
            if holder is not None and self._busy_for(dev, holder):
                dev.claim.touch(holder, now)  # not idle while its work waits or runs
            claimed = dev.claim.claim(cmd.lane, now)
            if isinstance(claimed, DeviceError):
                return Refused(cid, claimed)

        self._finished.pop(cid, None)
        self._pending[cid] = _Pending(cmd, attempt)
        bisect.insort(dev.queue, (cmd.priority, next(self._arrival), cmd))
        return Enqueued(cid, attempt)

    def next_for(self, device: str, now: float) -> Command | None:
        """The command to run now on ``device``, marked running; None while one is running or
        when nothing that can still start is queued. Commands whose deadline has passed are
        skipped: they stay queued until :meth:`expired` answers them."""
        dev = self._device(device)
        if dev.running is not None:
            return None
        index = next((i for i, e in enumerate(dev.queue) if now < e[2].deadline), None)
        if index is None:
            return None
        _, _, cmd = dev.queue.pop(index)
        self._pending[cmd.command_id].running = True
        dev.running = cmd
        if dev.claim is not None and cmd.kind in CLAIMED_KINDS:
            dev.claim.touch(cmd.lane, now)
        return cmd

    def expired(self, now: float) -> list[tuple[Command, Outcome]]:
        """Queued commands whose deadline has passed, taken out of their queues, each with its
        ``TIMEOUT`` outcome, to be answered by the shell. Each is returned once, by one call;
        call it on a timer (every second or so: a deadline is answered that much late)."""
        found: list[tuple[Command, Outcome]] = []
        for dev in self._devices.values():
            found.extend(self._drop_expired(dev, now))
        return found

    def finish(self, command_id: str, outcome: Outcome, now: float) -> FinishResult:
        """Record the outcome of a running (or, to cancel it, a queued) command. Only the first
        outcome of an attempt counts; see :data:`FinishResult`."""
        pending = self._pending.get(command_id)
        if pending is None:
            return "already_finished" if command_id in self._finished else "unknown"
        cmd = pending.command
        dev = self._devices[cmd.device]
        if pending.running:
            dev.running = None
        else:
            dev.queue = [entry for entry in dev.queue if entry[2].command_id != command_id]
        if dev.claim is not None and cmd.kind in CLAIMED_KINDS:
            dev.claim.touch(cmd.lane, now)  # idle time counts from the end of the last use
        self._record(cmd, outcome, now)
        return "recorded"

    # -- looking in ----------------------------------------------------------------------------

    def state_of(self, command_id: str) -> Literal["queued", "running", "finished"] | None:
        pending = self._pending.get(command_id)
        if pending is not None:
            return "running" if pending.running else "queued"
        return "finished" if command_id in self._finished else None

    def outcome_of(self, command_id: str) -> Outcome | None:
        """The remembered outcome of a finished command."""
        finished = self._finished.get(command_id)
        return finished.outcome if finished is not None else None

    def running(self, device: str) -> Command | None:
        return self._device(device).running

    def depth(self, device: str) -> int:
        """Commands queued (not counting the running one)."""
        return len(self._device(device).queue)

    @property
    def remembered(self) -> int:
        """Finished commands held for de-duplication."""
        return len(self._finished)

    # -- inside --------------------------------------------------------------------------------

    def _device(self, name: str) -> _Device:
        try:
            return self._devices[name]
        except KeyError:
            raise RelayUsageError(f"no device {name!r} was added") from None

    def _refusal(self, cmd: Command, now: float) -> DeviceError | None:
        name = cmd.device
        dev = self._devices.get(name)
        if dev is None:
            return device_error(
                "DEVICE_UNKNOWN",
                f"no shared device {name!r}",
                device=name,
                known=sorted(self._devices),
            )
        if cmd.kind not in COMMAND_KINDS_FOR_DEVICE[dev.kind]:
            return device_error(
                "NOT_SUPPORTED", f"a {dev.kind} cannot {cmd.kind}", device=name, kind=cmd.kind
            )
        if not dev.online:
            return device_error("OFFLINE", f"device {name} is offline", device=name)
        if now >= cmd.deadline:
            return device_error("TIMEOUT", "the command's deadline has already passed", device=name)
        if len(dev.queue) >= self.queue_limit:
            return device_error(
                "QUEUE_FULL", f"{len(dev.queue)} commands wait for {name}", device=name
            )
        return None

    def _conflict(self, cmd: Command) -> Conflict:
        return Conflict(
            cmd.command_id,
            device_error(
                "COMMAND_ID_CONFLICT",
                f"command {cmd.command_id} was already sent with other content",
                device=cmd.device,
            ),
        )

    @staticmethod
    def _busy_for(dev: _Device, lane: str) -> bool:
        work = [cmd for _, _, cmd in dev.queue]
        if dev.running is not None:
            work.append(dev.running)
        return any(cmd.lane == lane and cmd.kind in CLAIMED_KINDS for cmd in work)

    def _drop_expired(self, dev: _Device, now: float) -> list[tuple[Command, Outcome]]:
        if not any(now >= cmd.deadline for _, _, cmd in dev.queue):
            return []
        kept: list[tuple[int, int, Command]] = []
        dropped: list[tuple[Command, Outcome]] = []
        for entry in dev.queue:
            cmd = entry[2]
            if now >= cmd.deadline:
                error = device_error(
                    "TIMEOUT", f"command {cmd.command_id} waited past its deadline", device=dev.name
                )
                dropped.append((cmd, self._record(cmd, error, now)))
            else:
                kept.append(entry)
        dev.queue = kept
        return dropped

    def _record(self, cmd: Command, outcome: Outcome, now: float) -> Outcome:
        """The attempt's one outcome: pending -> finished (the only place that does it)."""
        pending = self._pending.pop(cmd.command_id)
        self._finished[cmd.command_id] = _Finished(_fingerprint(cmd), pending.attempt, outcome, now)
        self._forget(now)
        return outcome

    def _forget(self, now: float) -> None:
        finished = self._finished
        while finished:
            oldest = next(iter(finished.values()))
            if now < oldest.finished_at + self.dedupe_ttl:
                break
            finished.popitem(last=False)
        while len(finished) > self.dedupe_limit:
            finished.popitem(last=False)
