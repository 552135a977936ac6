"""The lane lifecycle: a pure state machine (no I/O; ``now`` is passed in).

Theory of operation
-------------------
A register (lane) is keyed by its stable device id, never by its address: a register that
re-announces itself on a new IP is the same lane (its address is updated).

::

    discovered ──enroll──▶ enrolled ──online──▶ online ◀──online── offline ◀── stale
                                                  │  ▲                 │  ▲       ▲
                                                  │  └──heartbeat      │  │       │
                                                  └──offline / ────────┘  │       │
                                                     heartbeat missed     │       │
                                       offline longer than stale_after ───┘───────┘
    any state but retired ──retire (technician, or stale longer than retire_after)──▶ retired
    retired ──enroll──▶ enrolled        (a retired register must be re-enrolled by a person)

Presence comes from the lane's retained status topic and its last will (``online`` /
``offline``) and from heartbeats; ``tick(now)`` applies the timers: a missed heartbeat makes an
online lane offline (covers a lost last will), a long absence makes it stale, a longer one
retires it. Alerts are raised long before any cut-off: ``offline_warn_after`` first, then stale,
then ``retire_warn_before`` ahead of retirement.

Every transition is returned as a :class:`Transition` for the shell to log and publish; an event
that is not allowed in the current state raises :class:`LaneStateError` (as h11 raises
LocalProtocolError), never silently changes anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class LaneState(enum.StrEnum):
    DISCOVERED = "discovered"
    ENROLLED = "enrolled"
    ONLINE = "online"
    OFFLINE = "offline"
    STALE = "stale"
    RETIRED = "retired"


class Event(enum.StrEnum):
    DISCOVERED = "discovered"  # seen on mDNS (again)
    ENROLL = "enroll"  # a technician enrolled it
    ONLINE = "online"  # presence online, or any message from it
    HEARTBEAT = "heartbeat"
    OFFLINE = "offline"  # presence offline (clean) or last will
    HEARTBEAT_MISSED = "heartbeat_missed"  # timer
    STALE_TIMEOUT = "stale_timeout"  # timer
    RETIRE = "retire"  # a technician, or the retire timer


S, E = LaneState, Event

#: (state, event) -> next state. Everything not listed is illegal.
TRANSITIONS: dict[tuple[LaneState, Event], LaneState] = {
    (S.DISCOVERED, E.DISCOVERED): S.DISCOVERED,
    (S.DISCOVERED, E.ENROLL): S.ENROLLED,
    (S.ENROLLED, E.DISCOVERED): S.ENROLLED,
    (S.ENROLLED, E.ONLINE): S.ONLINE,
    (S.ENROLLED, E.HEARTBEAT): S.ONLINE,
    (S.ENROLLED, E.OFFLINE): S.OFFLINE,
    (S.ONLINE, E.DISCOVERED): S.ONLINE,
    (S.ONLINE, E.ONLINE): S.ONLINE,
    (S.ONLINE, E.HEARTBEAT): S.ONLINE,
    (S.ONLINE, E.OFFLINE): S.OFFLINE,
    (S.ONLINE, E.HEARTBEAT_MISSED): S.OFFLINE,
    (S.OFFLINE, E.DISCOVERED): S.OFFLINE,
    (S.OFFLINE, E.ONLINE): S.ONLINE,
    (S.OFFLINE, E.HEARTBEAT): S.ONLINE,
    (S.OFFLINE, E.OFFLINE): S.OFFLINE,
    (S.OFFLINE, E.STALE_TIMEOUT): S.STALE,
    (S.STALE, E.DISCOVERED): S.STALE,
    (S.STALE, E.ONLINE): S.ONLINE,
    (S.STALE, E.HEARTBEAT): S.ONLINE,
    (S.STALE, E.OFFLINE): S.STALE,
    (S.RETIRED, E.DISCOVERED): S.RETIRED,
    (S.RETIRED, E.ENROLL): S.ENROLLED,
}
for _state in (S.DISCOVERED, S.ENROLLED, S.ONLINE, S.OFFLINE, S.STALE):
    TRANSITIONS[(_state, E.RETIRE)] = S.RETIRED


class LaneStateError(Exception):
    """An event that is not allowed in the lane's current state."""


@dataclass(frozen=True, slots=True)
class Timers:
    heartbeat_timeout_s: float = 90.0
    offline_warn_after_s: float = 4 * 3600.0
    stale_after_s: float = 3 * 86400.0
    retire_after_s: float = 90 * 86400.0
    retire_warn_before_s: float = 14 * 86400.0


@dataclass(frozen=True, slots=True)
class Lane:
    device_id: str
    state: LaneState
    since: float
    """When the lane entered ``state``."""
    last_seen: float | None = None
    """Last presence, heartbeat or message from the lane."""
    address: str | None = None
    lane_id: str | None = None
    software: str | None = None
    history: tuple[tuple[float, str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Transition:
    device_id: str
    before: LaneState | None
    after: LaneState
    event: Event
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    device_id: str
    level: str  # "warning" | "critical"
    code: str
    message: str


def discovered(
    device_id: str, now: float, *, address: str | None = None, lane_id: str | None = None,
    software: str | None = None,
) -> tuple[Lane, Transition]:  # fmt: skip
    """A register seen for the first time."""
    lane = Lane(device_id, S.DISCOVERED, now, now, address, lane_id, software)
    return lane, Transition(device_id, None, S.DISCOVERED, E.DISCOVERED, now, "first seen")


def apply(
    lane: Lane, event: Event, now: float, reason: str = "", **updates: str | None
) -> tuple[Lane, Transition | None]:
    """Apply ``event``; returns the new lane and the transition (None when the state is
    unchanged). ``updates`` may carry a new ``address``, ``lane_id`` or ``software``: a known
    device on a new address stays the same lane."""
    after = TRANSITIONS.get((lane.state, event))
    if after is None:
        raise LaneStateError(
            f"lane {lane.device_id}: {event.value} is not allowed when {lane.state}"
        )
    changes: dict[str, object] = {k: v for k, v in updates.items() if v is not None}
    if event in (E.ONLINE, E.HEARTBEAT, E.DISCOVERED, E.OFFLINE):
        changes["last_seen"] = now
    if after == lane.state:
        return replace(lane, **changes), None  # type: ignore[arg-type]
    transition = Transition(lane.device_id, lane.state, after, event, now, reason or event.value)
    history = (*lane.history[-19:], (now, after.value, transition.reason))
    return replace(lane, state=after, since=now, history=history, **changes), transition  # type: ignore[arg-type]


def tick(lane: Lane, now: float, timers: Timers) -> tuple[Lane, list[Transition]]:
    """Apply the timers; may cascade (a lane silent for 100 days: offline, stale, retired)."""
    transitions: list[Transition] = []
    seen = lane.last_seen if lane.last_seen is not None else lane.since
    if lane.state == S.ONLINE and now - seen >= timers.heartbeat_timeout_s:
        lane, t = apply(lane, E.HEARTBEAT_MISSED, now, f"no heartbeat for {now - seen:.0f}s")
        transitions += [t] if t else []
    if lane.state == S.OFFLINE and now - seen >= timers.stale_after_s:
        lane, t = apply(lane, E.STALE_TIMEOUT, now, f"offline for {(now - seen) / 86400:.1f} days")
        transitions += [t] if t else []
    if lane.state == S.STALE and now - seen >= timers.retire_after_s:
        lane, t = apply(lane, E.RETIRE, now, f"silent for {(now - seen) / 86400:.0f} days")
        transitions += [t] if t else []
    return lane, transitions


def alerts(lane: Lane, now: float, timers: Timers) -> list[Alert]:
    """What a technician should hear about this lane now, long before any cut-off."""
    seen = lane.last_seen if lane.last_seen is not None else lane.since
    silent = now - seen
    found: list[Alert] = []
    if lane.state == S.DISCOVERED:
        found.append(Alert(lane.device_id, "warning", "NOT_ENROLLED",
                           "a register announced itself but is not enrolled"))  # fmt: skip
    if lane.state == S.OFFLINE and silent >= timers.offline_warn_after_s:
        found.append(Alert(lane.device_id, "warning", "OFFLINE_LONG",
                           f"offline for {silent / 3600:.1f} h"))  # fmt: skip
    if lane.state == S.STALE:
        left = timers.retire_after_s - silent
        level = "critical" if left <= timers.retire_warn_before_s else "warning"
        found.append(Alert(lane.device_id, level, "STALE",
                           f"silent for {silent / 86400:.1f} days; retired in {left / 86400:.0f}"
                           " days unless it comes back"))  # fmt: skip
    return found
