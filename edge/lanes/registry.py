"""The lane registry: the lifecycle state machine fed by presence and discovery, kept on disk.

Theory of operation
-------------------
:class:`LaneStore` keeps one row per register (keyed by its stable device id) and an append-only
log of transitions in ``<state_dir>/lanes.db`` (SQLite, WAL). :class:`LaneRegistry` is the
asyncio shell around the pure :mod:`edge.lanes.lifecycle`:

- **presence** (``store/{store}/lane/{lane}/status``, retained, with a last will): ``online`` is
  an ONLINE event (a re-published ``online`` is the heartbeat), ``offline`` an OFFLINE event;
  the payload's ``device_id`` is the identity (else the lane id), ``software`` its version;
- **discovery** (mDNS ``_posreg._tcp``): a DISCOVERED event carrying the new address, so a
  known register on a new address stays the same lane;
- **timers**: :meth:`LaneRegistry.run` ticks every ``tick_s`` (missed heartbeat → offline, long
  absence → stale → retired), with ``now`` from the injected clock.

A register that speaks on the broker is enrolled on first contact when ``auto_enroll`` is set
(the default): once the hub has its identity (``edge init``) only a device enrolled with a
certificate can speak on the broker's LAN listener, so first contact already means "enrolled
by a technician". One only seen on mDNS stays ``discovered`` until a technician acts. Every
transition is logged, stored with its reason, and counted in ``edge_lanes{state}``.

A full disk does not stop the registry: what cannot be saved is held in memory (the lanes as
they are now, and up to :data:`HELD_TRANSITIONS_MAX` transitions, the oldest dropped first),
shown as it is, and saved with the next change or timer tick once the disk has room. A restart
while the disk is full loses only what was held.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from edge.bus.envelope import LaneStatus
from edge.files import is_disk_full
from edge.lanes.lifecycle import (
    Event,
    Lane,
    LaneState,
    LaneStateError,
    Timers,
    Transition,
    alerts,
    apply,
    discovered,
    tick,
)

log = logging.getLogger(__name__)
HELD_TRANSITIONS_MAX = 1000
"""Transitions held in memory while the disk is full; beyond it the oldest are dropped."""
_decode_status = msgspec.json.Decoder(LaneStatus).decode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lanes (device_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, at REAL NOT NULL,
    before TEXT, after TEXT NOT NULL, event TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_by_device ON transitions (device_id, id);
"""


_HISTORY_KEYS = ("at", "before", "after", "event", "reason")


class LaneStore:
    """SQLite file of lanes and their transitions. Calls are short; run them off the loop."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> dict[str, Lane]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        return {
            device_id: msgspec.json.decode(data, type=Lane)
            for device_id, data in db.execute("SELECT device_id, data FROM lanes")
        }

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def save(self, lanes: Sequence[Lane], transitions: Sequence[Transition]) -> None:
        """One transaction: all or nothing (``sqlite3.OperationalError`` on a full disk)."""
        db = self._require()
        with db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO lanes (device_id, data) VALUES (?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET data = excluded.data",
                [(lane.device_id, msgspec.json.encode(lane)) for lane in lanes],
            )
            db.executemany(
                "INSERT INTO transitions (device_id, at, before, after, event, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(t.device_id, t.at, t.before, t.after, t.event, t.reason) for t in transitions],
            )

    def transitions(self, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._require().execute(
            "SELECT at, before, after, event, reason FROM transitions WHERE device_id = ? "
            "ORDER BY id DESC LIMIT ?",
            (device_id, limit),
        )
        return [dict(zip(_HISTORY_KEYS, row, strict=True)) for row in rows]

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("lane store is not open")
        return self._db


class LaneRegistry:
    def __init__(
        self,
        store: LaneStore,
        timers: Timers,
        *,
        auto_enroll: bool = True,
        tick_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[dict[LaneState, int]], None] | None = None,
    ) -> None:
        self._store = store
        self.timers = timers
        self._auto_enroll = auto_enroll
        self._tick_s = tick_s
        self._clock = clock
        self._on_change = on_change
        self._lanes: dict[str, Lane] = {}
        self._by_lane_id: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.changed = asyncio.Condition()
        # Not saved yet: the disk was full (see the module docstring).
        self._unsaved: dict[str, Lane] = {}
        self._held: list[Transition] = []
        self._dropped = 0

    async def open(self) -> None:
        self._lanes = await asyncio.to_thread(self._store.open)
        self._by_lane_id = {ln.lane_id: d for d, ln in self._lanes.items() if ln.lane_id}
        self._report()

    async def close(self) -> None:
        if self._unsaved:
            await self._save([], [])
        if self._unsaved:
            log.warning(
                "lanes: the disk is still full: %d lane states and %d transitions are lost "
                "with this stop (the registers report again when they reconnect)",
                len(self._unsaved), len(self._held),
            )  # fmt: skip
        await asyncio.to_thread(self._store.close)

    # -- inputs -----------------------------------------------------------------------------

    async def on_presence(self, lane_id: str, payload: bytes) -> None:
        """A lane's retained status message (or its last will)."""
        if not payload:  # the retained status was cleared: the register is gone
            device_id = self._by_lane_id.get(lane_id, lane_id)
            await self._event(device_id, Event.OFFLINE, reason="status cleared")
            return
        try:
            status = _decode_status(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("lanes: bad status from lane %s ignored: %s", lane_id, exc)
            return
        device_id = status.device_id or self._by_lane_id.get(lane_id) or lane_id
        if status.state == "online":
            await self._contact(device_id, lane_id, Event.ONLINE, software=status.software)
        else:
            await self._event(device_id, Event.OFFLINE, reason=status.reason or "offline")

    async def on_discovered(
        self, device_id: str, *, address: str | None, lane_id: str | None, software: str | None
    ) -> None:
        async with self._lock:
            now = self._clock()
            lane = self._lanes.get(device_id)
            if lane is None:
                lane, first = discovered(
                    device_id, now, address=address, lane_id=lane_id, software=software
                )
                await self._commit(lane, [first])
                return
            lane, t = apply(
                lane, Event.DISCOVERED, now, address=address, lane_id=lane_id, software=software
            )
            await self._commit(lane, [t] if t else [])

    async def enroll(self, device_id: str, reason: str = "enrolled by technician") -> Lane:
        return await self._event(device_id, Event.ENROLL, reason=reason, must_exist=True)

    async def retire(self, device_id: str, reason: str = "retired by technician") -> Lane:
        return await self._event(device_id, Event.RETIRE, reason=reason, must_exist=True)

    # -- timers -----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self._tick_s)

    async def tick(self) -> None:
        async with self._lock:
            now = self._clock()
            for device_id in list(self._lanes):
                lane, transitions = tick(self._lanes[device_id], now, self.timers)
                if transitions:
                    await self._commit(lane, transitions)
            if self._unsaved:
                await self._save([], [])

    # -- reading ----------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock()
        rows = []
        for lane in sorted(self._lanes.values(), key=lambda ln: (ln.lane_id or "", ln.device_id)):
            rows.append(
                {
                    "device_id": lane.device_id,
                    "lane_id": lane.lane_id,
                    "state": lane.state.value,
                    "since": lane.since,
                    "last_seen": lane.last_seen,
                    "silent_s": None if lane.last_seen is None else max(0.0, now - lane.last_seen),
                    "address": lane.address,
                    "software": lane.software,
                    "alerts": [
                        {"level": a.level, "code": a.code, "message": a.message}
                        for a in alerts(lane, now, self.timers)
                    ],
                }
            )
        return rows

    def counts(self) -> dict[LaneState, int]:
        counts = dict.fromkeys(LaneState, 0)
        for lane in self._lanes.values():
            counts[lane.state] += 1
        return counts

    async def history(self, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The device's transitions, newest first, those held in memory included."""
        held = [
            dict(zip(_HISTORY_KEYS, (t.at, t.before, t.after, t.event, t.reason), strict=True))
            for t in reversed(self._held)
            if t.device_id == device_id
        ]
        stored = await asyncio.to_thread(self._store.transitions, device_id, limit)
        return (held + stored)[:limit]

    # -- internals --------------------------------------------------------------------------

    async def _contact(
        self, device_id: str, lane_id: str, event: Event, *, software: str | None = None
    ) -> None:
        async with self._lock:
            now = self._clock()
            sw = software
            lane = self._lanes.get(device_id)
            transitions: list[Transition] = []
            if lane is None:
                lane, first = discovered(device_id, now, lane_id=lane_id, software=sw)
                transitions.append(first)
            if lane.state == LaneState.RETIRED:
                # Retired by a person (or after months of silence): it comes back only when a
                # technician enrolls it again.
                log.warning("lanes: retired device %s (lane %s) is talking", device_id, lane_id)
                lane, _ = apply(lane, Event.DISCOVERED, now, lane_id=lane_id, software=sw)
            elif lane.state == LaneState.DISCOVERED and not self._auto_enroll:
                lane, _ = apply(lane, Event.DISCOVERED, now, lane_id=lane_id, software=sw)
            else:
                if lane.state == LaneState.DISCOVERED:
                    lane, t = apply(lane, Event.ENROLL, now, "enrolled on first contact")
                    transitions += [t] if t else []
                lane, t = apply(lane, event, now, lane_id=lane_id, software=sw)
                transitions += [t] if t else []
            await self._commit(lane, transitions)

    async def _event(
        self, device_id: str, event: Event, *, reason: str = "", must_exist: bool = False
    ) -> Lane:
        async with self._lock:
            lane = self._lanes.get(device_id)
            if lane is None:
                if must_exist:
                    raise KeyError(device_id)
                return discovered(device_id, self._clock())[0]
            try:
                lane, t = apply(lane, event, self._clock(), reason)
            except LaneStateError:
                if must_exist:
                    raise
                return lane  # e.g. a last will for a lane already offline
            await self._commit(lane, [t] if t else [])
            return lane

    async def _commit(self, lane: Lane, transitions: list[Transition]) -> None:
        await self._save([lane], transitions)
        self._lanes[lane.device_id] = lane
        if lane.lane_id:
            self._by_lane_id[lane.lane_id] = lane.device_id
        for t in transitions:
            log.info(
                "lane %s (%s): %s -> %s (%s)",
                lane.lane_id or "-",
                t.device_id,
                t.before.value if t.before else "new",
                t.after.value,
                t.reason,
            )
        if transitions:
            self._report()
            async with self.changed:
                self.changed.notify_all()

    async def _save(self, lanes: list[Lane], transitions: list[Transition]) -> None:
        """Save ``lanes`` and ``transitions`` with whatever a full disk held back; on a full
        disk, hold them all (raises any other error, holding nothing new)."""
        unsaved = self._unsaved | {lane.device_id: lane for lane in lanes}
        held = self._held + transitions
        try:
            await asyncio.to_thread(self._store.save, list(unsaved.values()), held)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            if not self._unsaved:
                log.warning(
                    "lanes: the disk is full (%s): lane states are kept in memory and saved "
                    "once there is room",
                    exc,
                )
            dropped = max(0, len(held) - HELD_TRANSITIONS_MAX)
            self._unsaved, self._held = unsaved, held[dropped:]
            self._dropped += dropped
            return
        if self._unsaved:
            lost = f"; {self._dropped} older transitions were dropped" if self._dropped else ""
            log.warning(
                "lanes: the disk has room again: saved %d lanes and %d transitions held in "
                "memory%s",
                len(unsaved), len(held), lost,
            )  # fmt: skip
        self._unsaved, self._held, self._dropped = {}, [], 0

    def _report(self) -> None:
        if self._on_change is not None:
            self._on_change(self.counts())
