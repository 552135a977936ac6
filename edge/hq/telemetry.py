"""Telemetry to HQ: the hub's health as one message, and when to send it.

Pure: no I/O, ``now`` comes in. The composition root supplies an async callable that gathers a
:class:`Snapshot` from the live components; :mod:`edge.hq.link` samples it every
``telemetry_poll_s``, asks :class:`TelemetryPolicy` whether to publish, and publishes
:func:`telemetry_message` on ``{prefix}/store/{store}/telemetry``.

When: once right after each connect, every ``interval_s``, and on a *significant* change once it
has held for ``debounce_s`` (a flapping WAN is reported once it settles, not at every flap).
Significant: the WAN state, the parked count, lanes by state, devices by status, the catalogue
version, the hub version, the outbox going from empty to non-empty or back, and a salvage of a
damaged outbox file. The outbox depth
itself, its age and the free disk space move with every sale: they ride along with the next
message instead of triggering one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

TELEMETRY_VERSION = 1

WanState = Literal["up", "down", "unknown"]
Reason = Literal["connect", "interval", "change", "command"]


class Snapshot(msgspec.Struct, kw_only=True, frozen=True):
    """The hub's health at one moment, gathered by the composition root."""

    wan: WanState
    """``down`` while the outbox's circuit breaker is open (the cloud is unreachable)."""
    outbox_depth: int
    """Items waiting to be delivered (not counting parked ones)."""
    outbox_oldest_age_s: float | None
    """Age of the oldest waiting item; None when the outbox is empty."""
    parked: int
    """Items the cloud rejected, waiting for a technician."""
    lanes: dict[str, int]
    """Lane state (discovered, enrolled, online, offline, stale, retired) -> count."""
    devices: dict[str, int]
    """Device status (online, offline, paper_out, ...) -> count."""
    catalogue_version: int | None
    free_disk_bytes: int
    hub_version: str
    outbox_salvage: str | None = None
    """Set after the outbox file was found damaged and salvaged (what was kept, what could not
    be read): the store's registers must re-send their journals."""


class Telemetry(msgspec.Struct, kw_only=True):
    """One telemetry message (schema docs/schemas/hq-telemetry.json)."""

    v: int = TELEMETRY_VERSION
    store_id: str
    hub_id: str
    seq: int
    """Counts up from 1 for each message of one hub process (a reset means a restart)."""
    at: str
    reason: Reason
    wan: WanState
    outbox_depth: int
    outbox_oldest_age_s: float | None
    parked: int
    lanes: dict[str, int]
    devices: dict[str, int]
    catalogue_version: int | None
    free_disk_bytes: int
    hub_version: str
    outbox_salvage: str | None = None
    """The last salvage of a damaged outbox file, while its damaged file is kept (see
    docs/operations.md): ask the store to have its registers re-send their journals."""


def telemetry_message(
    snapshot: Snapshot,
    *,
    store_id: str,
    hub_id: str,
    seq: int,
    reason: Reason,
    now: dt.datetime,
) -> Telemetry:
    age = snapshot.outbox_oldest_age_s
    return Telemetry(
        store_id=store_id,
        hub_id=hub_id,
        seq=seq,
        at=now.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
        reason=reason,
        wan=snapshot.wan,
        outbox_depth=snapshot.outbox_depth,
        outbox_oldest_age_s=None if age is None else round(age, 1),
        parked=snapshot.parked,
        lanes={state: n for state, n in sorted(snapshot.lanes.items()) if n},
        devices={status: n for status, n in sorted(snapshot.devices.items()) if n},
        catalogue_version=snapshot.catalogue_version,
        free_disk_bytes=snapshot.free_disk_bytes,
        hub_version=snapshot.hub_version,
        outbox_salvage=snapshot.outbox_salvage,
    )


def significant(snapshot: Snapshot) -> tuple[Any, ...]:
    """What a change of is worth a message of its own (module docstring)."""
    return (
        snapshot.wan,
        snapshot.parked,
        tuple(sorted((k, v) for k, v in snapshot.lanes.items() if v)),
        tuple(sorted((k, v) for k, v in snapshot.devices.items() if v)),
        snapshot.catalogue_version,
        snapshot.hub_version,
        snapshot.outbox_depth > 0,
        snapshot.outbox_salvage,
    )


class TelemetryPolicy:
    """Decides when to publish. Call :meth:`due` with each sample, :meth:`published` after a
    message went out. ``interval_s`` may be changed at any time (HQ's ``telemetry.interval_s``).
    """

    def __init__(self, interval_s: float, debounce_s: float) -> None:
        self.interval_s = interval_s
        self.debounce_s = debounce_s
        self._last: tuple[Any, ...] | None = None
        self._last_at: float | None = None
        self._pending: tuple[Any, ...] | None = None
        self._pending_since = 0.0

    def reset(self) -> None:
        """After a reconnect: the next sample is published (reason ``connect``)."""
        self._last_at = None

    def due(self, snapshot: Snapshot, now: float) -> Reason | None:
        if self._last_at is None:
            return "connect"
        key = significant(snapshot)
        if key != self._last:
            if key != self._pending:  # a new change (or a change of a change): restart
                self._pending, self._pending_since = key, now
            if now - self._pending_since >= self.debounce_s:
                return "change"
        else:
            self._pending = None
        if now - self._last_at >= self.interval_s:
            return "interval"
        return None

    def published(self, snapshot: Snapshot, now: float) -> None:
        self._last = significant(snapshot)
        self._last_at = now
        self._pending = None
