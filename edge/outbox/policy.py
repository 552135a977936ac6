"""The outbox delivery policy: pure decisions, no I/O. ``now`` and a ``random.Random`` come in.

Theory of operation
-------------------
An outbox item is *pending* until the cloud answers for it. Each delivery attempt ends in one of
three outcomes:

- :class:`Delivered`: the cloud holds the item (also when it says it already had it: uploads are
  idempotent by key, so "already there" after a lost response is success).
- :class:`RetryLater`: nothing is known to be wrong with the item; the cloud was unreachable
  (``connection``), did not answer in time (``timeout``), throttled us (``throttled``) or failed
  (``server``). The item is tried again after a per-item exponential backoff with jitter
  (:class:`RetrySchedule`); a ``Retry-After`` is a floor on that delay, and a throttle is
  account-wide (NetSuite-style), so it also pauses every other send (``throttle_until``).
  Transient failures retry for ever: age alerts, not parking, are the safety net.
- :class:`Rejected`: the cloud refused the item itself. It is *parked* with the cloud's whole
  error until a technician re-queues it. A parked item holds only the items that depend on it.

The WAN circuit breaker (:class:`CircuitBreaker`) sits above the items. Only connection-class
failures (``connection``, ``timeout``) count towards opening it, and only when they come in a
row; any other answer (delivered, rejected, throttled, a 5xx) proves the WAN is up and resets the
count. While open, nothing is sent; after a cooldown the breaker lets exactly one single-item
batch through as a probe (half-open). The probe's success closes it; its failure re-opens it with
the cooldown doubled, up to a cap. When it closes, the sender makes every pending item still
backing off due at once (``OutboxStore.release_backoff``), so the backlog starts draining within
one round trip of the first good probe instead of waiting out timers.

Ordering is per dependency, never global: an item waits while something it depends on (its
original sale, its customer record) is pending or in flight, and is blocked, saying so, while
that dependency is parked. A dependency that is delivered, or absent from this outbox (another
store's sale, a customer already in the ERP, a pruned item), is satisfied. Unrelated items never
wait behind a parked or slow one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

RetryKind = Literal["connection", "timeout", "throttled", "server"]
CONNECTION_KINDS: frozenset[str] = frozenset({"connection", "timeout"})
ItemStatus = Literal["pending", "delivered", "parked"]
DependencyStatus = Literal["pending", "delivered", "parked", "absent"]


@dataclass(frozen=True, slots=True)
class Delivered:
    record_id: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    reason: str
    kind: RetryKind
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    code: str
    message: str
    detail: Mapping[str, Any] | Any = None


Outcome: TypeAlias = Delivered | RetryLater | Rejected


def is_connection_failure(outcome: Outcome) -> bool:
    return isinstance(outcome, RetryLater) and outcome.kind in CONNECTION_KINDS


# -- per-item backoff --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Exponential backoff, capped, with "equal jitter": the delay after the n-th failed
    attempt is ``d * (1 - jitter) + U(0, d * jitter)`` with ``d = min(cap, base * factor**(n-1))``,
    so it is never below half the nominal delay (with the default jitter) and never above cap."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid retry schedule {self}")

    def delay(self, attempts: int, rng: random.Random) -> float:
        nominal = min(self.cap, self.base * self.factor ** max(0, min(attempts - 1, 64)))
        return nominal * (1 - self.jitter) + rng.random() * nominal * self.jitter


@dataclass(frozen=True, slots=True)
class ItemState:
    seq: int
    key: str
    depends_on: tuple[str, ...]
    attempts: int
    next_attempt_at: float
    status: ItemStatus
    last_error: str | None = None


def apply_outcome(
    item: ItemState, outcome: Outcome, now: float, schedule: RetrySchedule, rng: random.Random
) -> ItemState:
    """The item after an attempt that ended in ``outcome``."""
    if item.status != "pending":
        raise ValueError(f"{item.key} is {item.status}; only pending items are attempted")
    attempts = item.attempts + 1
    if isinstance(outcome, Delivered):
        return replace(item, attempts=attempts, status="delivered", last_error=None)
    if isinstance(outcome, Rejected):
        return replace(
            item,
            attempts=attempts,
            status="parked",
            last_error=f"{outcome.code}: {outcome.message}",
        )
    delay = schedule.delay(attempts, rng)
    if outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    return replace(item, attempts=attempts, next_attempt_at=now + delay, last_error=outcome.reason)


# -- the WAN circuit breaker ------------------------------------------------------------------

BreakerState = Literal["closed", "open", "half_open"]
BreakerEvent = Literal["success", "failure", "cooldown_over", "probe"]

#: (state, event) -> next state; "failure" in closed may also stay closed (below threshold).
BREAKER_TRANSITIONS: dict[tuple[BreakerState, BreakerEvent], BreakerState] = {
    ("closed", "success"): "closed",
    ("closed", "failure"): "open",  # once failure_threshold failures came in a row
    ("open", "cooldown_over"): "half_open",
    ("open", "success"): "closed",  # a late answer from a batch started before opening
    ("open", "failure"): "open",  # late failures do not extend the cooldown
    ("half_open", "probe"): "half_open",
    ("half_open", "success"): "closed",
    ("half_open", "failure"): "open",  # cooldown doubled
}


class BreakerError(Exception):
    """An illegal call: the shell broke the breaker's calling contract."""


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    cooldown_base: float = 2.0
    cooldown_cap: float = 30.0
    state: BreakerState = "closed"
    consecutive_failures: int = 0
    opened_at: float | None = None
    open_until: float | None = None
    cooldown: float = 0.0
    probe_in_flight: bool = False
    down_since: float | None = None
    """When the cloud stopped answering: the breaker's first opening of this outage (kept
    while probes fail and it opens again; None once closed)."""
    transitions: list[tuple[float, BreakerState, BreakerState]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.cooldown_base <= 0:
            raise ValueError("failure_threshold >= 1 and cooldown_base > 0 are required")
        self.cooldown_cap = max(self.cooldown_cap, self.cooldown_base)

    @property
    def next_probe_at(self) -> float | None:
        return self.open_until if self.state == "open" else None

    def gate(self, now: float) -> Literal["send", "probe", "blocked"]:
        """What may be sent now; moves open -> half_open when the cooldown is over."""
        if self.state == "open" and self.open_until is not None and now >= self.open_until:
            self._move("half_open", now)
        if self.state == "closed":
            return "send"
        if self.state == "half_open" and not self.probe_in_flight:
            return "probe"
        return "blocked"

    def begin_probe(self, now: float) -> None:
        if self.state != "half_open" or self.probe_in_flight:
            raise BreakerError(f"no probe allowed in state {self.state}")
        self.probe_in_flight = True

    def cancel_probe(self) -> None:
        """The probe was not sent after all (its item could not be): the next plan may send
        another."""
        self.probe_in_flight = False

    def record(self, outcomes: Sequence[Outcome], now: float) -> None:
        """Feed one batch's outcomes: a connection-class failure of the batch counts as one
        failure; any other answer proves the WAN is up."""
        if not outcomes:
            return
        if all(is_connection_failure(o) for o in outcomes):
            self._failure(now)
        else:
            self._success(now)

    def _success(self, now: float) -> None:
        self.consecutive_failures = 0
        self.probe_in_flight = False
        if self.state != "closed":
            self.cooldown = 0.0
            self.opened_at = self.open_until = self.down_since = None
            self._move("closed", now)

    def _failure(self, now: float) -> None:
        if self.state == "closed":
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.failure_threshold:
                self.cooldown = self.cooldown_base
                self._open(now)
        elif self.state == "half_open":
            if not self.probe_in_flight:
                # A failure from a batch started before the breaker opened: not the probe.
                return
            self.probe_in_flight = False
            self.cooldown = min(self.cooldown_cap, self.cooldown * 2 or self.cooldown_base)
            self._open(now)

    def _open(self, now: float) -> None:
        if self.state == "closed":
            self.down_since = now
        self.opened_at = now
        self.open_until = now + self.cooldown
        self._move("open", now)

    def _move(self, to: BreakerState, now: float) -> None:
        if to != self.state:
            self.transitions.append((now, self.state, to))
            del self.transitions[:-20]
            self.state = to

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "opened_at": self.opened_at,
            "down_since": self.down_since,
            "next_probe_at": self.next_probe_at,
            "cooldown_s": self.cooldown,
        }


# -- planning ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    batches: list[list[ItemState]]
    waiting: dict[str, str]
    """key -> why it is held back (dependencies only)."""
    probe: bool = False
    """True: the single batch is the breaker's probe (call ``breaker.begin_probe``)."""
    blocked: str | None = None
    """Why nothing at all may be sent now (breaker open, throttled), or None."""


def plan(
    candidates: Sequence[ItemState],
    *,
    dependency_status: Mapping[str, DependencyStatus],
    inflight: AbstractSet[str],
    capacity: int,
    batch_max: int,
    breaker: CircuitBreaker,
    throttle_until: float,
    now: float,
) -> Plan:
    """Which due items to send now, in batches, and why the others wait. O(len(candidates)).

    ``candidates``: pending items in sequence order. ``dependency_status``: the status of every
    key they depend on (missing keys count as absent). ``inflight``: keys being sent now.
    """
    if now < throttle_until:
        return Plan([], {}, blocked=f"throttled by the cloud for {throttle_until - now:.1f}s")
    gate = breaker.gate(now)
    if gate == "blocked":
        return Plan([], {}, blocked=f"WAN breaker {breaker.state}")
    if capacity <= 0:
        return Plan([], {}, blocked="all delivery slots busy")
    waiting: dict[str, str] = {}
    ready: list[ItemState] = []
    limit = 1 if gate == "probe" else capacity * batch_max
    for item in candidates:
        if item.status != "pending" or item.key in inflight or item.next_attempt_at > now:
            continue
        hold = _hold(item, dependency_status, inflight)
        if hold is not None:
            waiting[item.key] = hold
            continue
        if len(ready) < limit:
            ready.append(item)
    if gate == "probe":
        return Plan([ready] if ready else [], waiting, probe=bool(ready))
    size = max(1, batch_max)
    batches = [ready[i : i + size] for i in range(0, len(ready), size)][:capacity]
    return Plan(batches, waiting)


def _hold(
    item: ItemState, status: Mapping[str, DependencyStatus], inflight: AbstractSet[str]
) -> str | None:
    for dependency in item.depends_on:
        state = "pending" if dependency in inflight else status.get(dependency, "absent")
        if state == "pending":
            return f"waits for {dependency} (pending)"
        if state == "parked":
            return f"blocked by parked {dependency}"
    return None
