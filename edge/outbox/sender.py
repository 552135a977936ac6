"""The sender: drains the outbox to the cloud connector. The asyncio shell around the pure
delivery policy (edge.outbox.policy).

Theory of operation
-------------------
One loop, woken by a new append, a finished batch, an operator action, or the next due time
(at most ``idle_poll_s`` apart):

1. read due pending items in sequence order (``store.due``), skip those in flight; a little
   more than there is room for, looking further only when items held by their dependencies
   fill that window (up to :data:`LOOKAHEAD_MAX`);
2. look up the status of everything they depend on (``store.statuses``; absent = satisfied);
3. ask the policy for a plan: batches to send now (bounded by free concurrency slots, plus as
   many planned ahead while the cloud answers normally, and the connector's batch size; none
   while the WAN breaker is open or the cloud throttles us; one single-item probe while
   half-open), and why each held item waits;
4. start each batch as a task of the sender's TaskGroup, oldest first, while slots are free;
   a batch planned ahead waits with its payloads being read. A batch task calls the
   connector; on the answer it frees its slot and starts the next planned batch at once (not
   after a plan and two reads), feeds the breaker, records every outcome in the store
   (delivered / retry later with backoff / parked), and wakes the loop. When the breaker
   leaves "closed" or the cloud throttles us, the batches planned ahead are forgotten (their
   items are pending again).

When the breaker closes again (the WAN is back), items whose backoff grew during the outage are
made due at once, so the backlog starts draining immediately instead of waiting out its timers:
one indexed write per thousand of them, whatever the size of the backlog (reading every pending
item to pick them took 0.4 s of a 50,000-sale backlog before the first batch could go).

Upload never waits behind anything but its own dependencies: a parked item holds only the items
that depend on it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.metrics import Metrics
from edge.outbox import policy
from edge.outbox.store import Item, OutboxStore, StorageFull, StoreDamaged
from edge.settings import OutboxSettings
from edge.uplink.base import Connector, Outbound

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
DISK_FULL_PAUSE_S = 5.0
"""Sending pauses this long when the cloud's answers could not be recorded for lack of disk
space; then one batch tries again (posted again: the cloud holds it already, idempotently)."""
RELEASE_CHUNK = 1000
"""Items made due per write when the WAN comes back (see :meth:`Sender._release_backoff`)."""
LOOKAHEAD_MAX = 4096
"""At most this many due items are read for one plan (items held by their dependencies are
looked past up to here)."""


@dataclass
class Rates:
    """Exponentially smoothed per-minute rates for the status display."""

    accepted_per_min: float = 0.0
    delivered_per_min: float = 0.0
    _last: float = 0.0
    _accepted: int = 0
    _delivered: int = 0

    def tick(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed < 5.0:
            return
        if self._last:
            alpha = min(1.0, elapsed / 60.0)
            self.accepted_per_min += alpha * (self._accepted * 60 / elapsed - self.accepted_per_min)
            self.delivered_per_min += alpha * (
                self._delivered * 60 / elapsed - self.delivered_per_min
            )
        self._accepted = self._delivered = 0
        self._last = now


class Sender:
    def __init__(
        self,
        store: OutboxStore,
        connector: Connector,
        settings: OutboxSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._connector = connector
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._schedule = policy.RetrySchedule(base=settings.retry_base_s, cap=settings.retry_cap_s)
        self.breaker = policy.CircuitBreaker(
            failure_threshold=settings.breaker_threshold,
            cooldown_base=settings.breaker_cooldown_s,
            cooldown_cap=settings.breaker_cooldown_cap_s,
        )
        self._slots = max(1, min(settings.concurrency, connector.max_concurrency))
        self._batch_max = max(1, min(settings.batch_max, connector.max_batch))
        self._inflight: set[str] = set()
        self._running = 0
        # Batches planned ahead of a free slot, their payloads loading: a slot freed by an
        # answer starts the next batch at once instead of after a plan and two reads.
        self._ready: collections.deque[_Ready] = collections.deque()
        self._tg: asyncio.TaskGroup | None = None
        self._throttle_until = 0.0
        self.disk_full_until = 0.0
        """While the disk is full nothing is sent: the cloud's answers could not be recorded,
        and every batch would only be posted again (see :data:`DISK_FULL_PAUSE_S`)."""
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._last_prune = 0.0
        self.waiting: dict[str, str] = {}
        self.rates = Rates()
        self.batches_sent = 0

    # -- for the intake, the operators and the status display ----------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def wait_until(self, predicate: Callable[[], Awaitable[bool] | bool]) -> None:
        """Return once ``predicate`` holds, re-checking after every finished batch (for tests,
        the demo and tools: no polling)."""
        while True:
            progress = self._progress
            result = predicate()
            if await result if inspect.isawaitable(result) else result:
                return
            await progress.wait()

    def _pulse(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def note_accepted(self) -> None:
        self.rates._accepted += 1
        # Only an idle sender that may send now needs waking. While batches are in flight each
        # one wakes the loop when it finishes, and re-planning at every accepted sale during a
        # drain starves the event loop that acknowledges the sales (seen as a 1.4 s ack p99 in
        # the bench). While the breaker is open or the cloud throttles us, the sender's own
        # timer wakes it for the probe or the end of the throttle; a plan per sale (reading
        # 400 rows of a backlog that cannot go out) made acks 1.8x slower during an outage.
        if self._running == 0 and self._may_plan_ahead(self._clock()):
            self.wake()

    @property
    def connector_name(self) -> str:
        return self._connector.name

    def snapshot(self) -> dict[str, Any]:
        return {
            "connector": self._connector.name,
            "breaker": self.breaker.snapshot(),
            "inflight": len(self._inflight),
            "throttled_for_s": max(0.0, self._throttle_until - self._clock()),
            "disk_full_for_s": max(0.0, self.disk_full_until - self._clock()),
            "waiting": dict(list(self.waiting.items())[:50]),
        }

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                while True:
                    now = self._clock()
                    await self._housekeeping(now)
                    if self._running < self._slots or len(self._ready) < self._slots:
                        await self._plan_and_start(now)
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(await self._idle_for(now)):
                            await self._wake.wait()
        finally:
            self._tg = None
            self._drop_ready()
            await self._connector.aclose()

    def _may_plan_ahead(self, now: float) -> bool:
        """Batches are planned ahead only while the cloud answers normally: not while the
        breaker probes or the cloud throttles us."""
        return self.breaker.state == "closed" and now >= self._hold_until()

    def _hold_until(self) -> float:
        """Nothing is sent before this: the cloud throttles us, or the disk is full."""
        return max(self._throttle_until, self.disk_full_until)

    async def _plan_and_start(self, now: float) -> None:
        capacity = self._slots - self._running
        if self._may_plan_ahead(now):
            capacity += self._slots - len(self._ready)
        else:
            self._drop_ready()
        if capacity <= 0:
            return
        # Read a little more than the free capacity; only when items held by their
        # dependencies fill that window, look further (reading hundreds of rows at every plan
        # was most of the sender's cost when each batch is one record).
        wanted = capacity * self._batch_max
        limit = wanted + 32
        while True:
            planned = await self._plan(now, capacity, limit)
            if planned is None:
                self.waiting = {}
                return
            plan, by_key, read = planned
            sending = sum(len(batch) for batch in plan.batches)
            if (
                sending >= wanted
                or plan.probe
                or plan.blocked is not None
                or read < limit
                or limit >= LOOKAHEAD_MAX
            ):
                break
            limit = min(limit * 8, LOOKAHEAD_MAX)
        self.waiting = dict(plan.waiting)
        if plan.probe:
            self.breaker.begin_probe(now)
        for batch in plan.batches:
            items = [by_key[state.key] for state in batch]
            self._inflight.update(i.key for i in items)
            payloads = asyncio.ensure_future(self._store.payloads([i.seq for i in items], now=now))
            self._ready.append(_Ready(items, payloads, probe=plan.probe))
        self._start_ready()

    async def _plan(
        self, now: float, capacity: int, limit: int
    ) -> tuple[policy.Plan, dict[str, Item], int] | None:
        """The policy's plan over the first ``limit`` due items (None: nothing is due), the
        items by key, and how many rows were read."""
        # Keys in flight are left out by the query itself (reading them at every plan was most
        # of a drain's cost). Those in flight when the query starts stay out even if their
        # batch finishes during the await: the snapshot read before its commit still shows
        # them pending, and they would be sent again (harmless, the cloud is idempotent, but
        # wasted work).
        busy = set(self._inflight)
        rows = await self._store.due(now, limit, excluding=busy)
        due = [i for i in rows if i.key not in self._inflight]
        if not due:
            return None
        deps = {d for item in due for d in item.depends_on}
        found = await self._store.statuses(deps) if deps else {}
        dependency_status: dict[str, policy.DependencyStatus] = {
            d: ("pending" if d in self._inflight else found.get(d, "absent")) for d in deps
        }
        plan = policy.plan(
            [_state(item) for item in due],
            dependency_status=dependency_status,
            inflight=frozenset(self._inflight),
            capacity=capacity,
            batch_max=self._batch_max,
            breaker=self.breaker,
            throttle_until=self._hold_until(),
            now=now,
        )
        return plan, {item.key: item for item in due}, len(rows)

    def _start_ready(self) -> None:
        """Start planned batches, oldest first, in the free slots (none once stopping)."""
        while self._tg is not None and self._ready and self._running < self._slots:
            ready = self._ready.popleft()
            self._running += 1
            self._tg.create_task(self._send(ready), name=f"outbox-batch:{ready.items[0].seq}")

    def _drop_ready(self) -> None:
        """Forget the batches planned ahead (the breaker opened, the cloud throttles us, the
        sender stops): their items are pending again, for the next plan."""
        while self._ready:
            ready = self._ready.popleft()
            if ready.payloads.done() and not ready.payloads.cancelled():
                ready.payloads.exception()  # retrieved: a failed read is retried by the next plan
            ready.payloads.cancel()
            self._inflight.difference_update(i.key for i in ready.items)

    async def _send(self, ready: _Ready) -> None:
        items = ready.items
        slot_held = True
        sent = False
        try:
            payloads = await ready.payloads
            outbound = [_outbound(i, p) for i in items if (p := payloads.get(i.seq)) is not None]
            if len(outbound) < len(items):
                # None: damaged, parked. Left out: refiled on the read, planned again as it
                # now reads (the wake below).
                damaged = [i for i in items if i.seq in payloads and payloads[i.seq] is None]
                if damaged:
                    await self._park_damaged(damaged)
                items = [i for i in items if payloads.get(i.seq) is not None]
                if not items:
                    return
            sent = True
            outcomes = await self._connector.deliver(outbound)
            # The cloud has answered: the slot is free for the next batch while this one's
            # outcomes are recorded (its keys stay in flight until then).
            self._running -= 1
            slot_held = False
            if self._may_plan_ahead(self._clock()) and all(
                isinstance(outcome, policy.Delivered) for outcome in outcomes
            ):
                # The usual answer during a drain: it cannot open the breaker or throttle us,
                # so the next batch goes out before this one's outcomes are even assessed.
                self._start_ready()
            verdict = self._assess(items, outcomes)
            if self._may_plan_ahead(verdict.now):
                self._start_ready()
            self.wake()
            await self._record(verdict)
        except asyncio.CancelledError:
            raise
        except StoreDamaged as exc:  # the hub stops on it (OutboxService), and salvages
            log.error("outbox: batch starting at seq %d not sent: %s", items[0].seq, exc)
        except StorageFull as exc:
            self._hold_for_disk(items[0].seq, exc)
        except Exception:
            # A connector or store bug: the items stay pending and are tried again later.
            log.exception("outbox: batch starting at seq %d failed", items[0].seq)
        finally:
            if ready.probe and not sent:
                self.breaker.cancel_probe()  # nothing went out: the next plan probes again
            self._inflight.difference_update(i.key for i in ready.items)
            if slot_held:
                self._running -= 1
            self.batches_sent += 1
            self._pulse()
            self.wake()

    def _hold_for_disk(self, seq: int, exc: StorageFull) -> None:
        """The cloud answered but the disk has no room to record it: the batch stays pending
        (sent again once there is room; both connectors are idempotent), and nothing more is
        sent for :data:`DISK_FULL_PAUSE_S`, again and again until a record succeeds."""
        now = self._clock()
        if not self.disk_full_until:
            log.warning(
                "outbox: the disk is full: the cloud's answers cannot be recorded (batch from "
                "seq %d: %s); sending pauses until space returns",
                seq, exc,
            )  # fmt: skip
        self.disk_full_until = now + DISK_FULL_PAUSE_S
        self._drop_ready()

    def _assess(self, items: Sequence[Item], outcomes: Sequence[policy.Outcome]) -> _Verdict:
        """What the cloud's answers mean for each item, the breaker and the throttle (no I/O:
        the next batch may start on it before the outcomes are written)."""
        if len(outcomes) != len(items):
            raise RuntimeError(
                f"connector {self._connector.name} answered {len(outcomes)} outcomes "
                f"for {len(items)} items"
            )
        verdict = _Verdict(now=self._clock(), was_closed=self.breaker.state == "closed")
        now = verdict.now
        for item, outcome in zip(items, outcomes, strict=True):
            state = policy.apply_outcome(_state(item), outcome, now, self._schedule, self._rng)
            if isinstance(outcome, policy.Delivered):
                verdict.delivered.append((item.seq, outcome.record_id))
            elif isinstance(outcome, policy.Rejected):
                verdict.parked.append(
                    (item.seq, f"{outcome.code}: {outcome.message}", outcome.detail)
                )
                log.warning("outbox: %s rejected by the cloud: %s", item.key, outcome.code)
            else:
                verdict.retry.append(
                    (item.seq, state.attempts, state.next_attempt_at, outcome.reason)
                )
                self._metrics.outbox_retries.labels(outcome.kind).inc()
                if outcome.kind == "throttled" and outcome.retry_after:
                    self._throttle_until = max(self._throttle_until, now + outcome.retry_after)
        self.breaker.record(outcomes, now)
        if not self._may_plan_ahead(now):
            self._drop_ready()
        return verdict

    async def _park_damaged(self, items: Sequence[Item]) -> None:
        """Items whose stored payload no longer matches its digest (damaged on disk): never
        posted. Parked by the hub, not the cloud: the breaker and the throttle learn nothing
        from them. The service asks the registers for their journals; a re-send repairs the
        item and makes it due again (edge.outbox.store, *Payload damage*)."""
        reason = (
            "the stored copy no longer matches the digest taken when it was accepted (damaged "
            "on disk); not posted. The registers are asked to re-send their journals, which "
            "repairs it"
        )
        parked = set(
            await self._store.park_damaged([i.seq for i in items], reason, now=self._clock())
        )
        for item in items:
            if item.seq in parked:
                log.error(
                    "outbox: %s (seq %d): the stored payload no longer matches its digest "
                    "(damaged on disk); parked until its register re-sends it",
                    item.key,
                    item.seq,
                )
        self._metrics.outbox_parked.inc(len(parked))

    async def _record(self, verdict: _Verdict) -> None:
        now = verdict.now
        if verdict.delivered:
            await self._store.mark_delivered(verdict.delivered, now=now)
            self._metrics.outbox_delivered.inc(len(verdict.delivered))
            self.rates._delivered += len(verdict.delivered)
        if verdict.parked:
            await self._store.mark_parked(verdict.parked, now=now)
            self._metrics.outbox_parked.inc(len(verdict.parked))
        if verdict.retry:
            await self._store.mark_retry(verdict.retry)
        if self.disk_full_until and (verdict.delivered or verdict.parked or verdict.retry):
            log.warning("outbox: space is back: the cloud's answers are recorded again")
            self.disk_full_until = 0.0
        if not verdict.was_closed and self.breaker.state == "closed":
            log.info("outbox: the cloud answers again; releasing backoff of waiting items")
            await self._release_backoff(now)

    async def _release_backoff(self, now: float) -> None:
        # In short writes, so that new sales commit in between; the planner is woken after
        # each, so the drain starts with the first.
        while await self._store.release_backoff(now=now, limit=RELEASE_CHUNK) == RELEASE_CHUNK:
            self.wake()
        self.wake()

    async def _housekeeping(self, now: float) -> None:
        self.rates.tick(now)
        self._metrics.outbox_breaker_open.set(0 if self.breaker.state == "closed" else 1)
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            older_than = now - self._settings.retention_days * 86400
            pruned = await self._store.prune_delivered(older_than=older_than)
            if pruned:
                log.info(
                    "outbox: pruned %d delivered items older than %s days",
                    pruned,
                    self._settings.retention_days,
                )

    async def _idle_for(self, now: float) -> float:
        idle = self._settings.idle_poll_s
        if self._running >= self._slots:
            return idle
        # Wake at the earliest future event; the idle poll bounds the wait (and is > 0, so a
        # due-but-held item cannot spin the loop).
        events = [self._hold_until(), self.breaker.next_probe_at, await self._store.next_due_at()]
        future = [at - now for at in events if at is not None and at > now]
        return min([idle, *future])


@dataclass(slots=True)
class _Verdict:
    """The outcomes of one batch, sorted for the store."""

    now: float
    was_closed: bool
    delivered: list[tuple[int, str]] = field(default_factory=list)
    parked: list[tuple[int, str, Any]] = field(default_factory=list)
    retry: list[tuple[int, int, float, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Ready:
    """A planned batch waiting for a slot, its payloads being read meanwhile."""

    items: list[Item]
    payloads: asyncio.Future[dict[int, bytes | None]]
    probe: bool = False
    """The breaker's probe: if nothing of it goes out, the breaker may probe again."""


def _state(item: Item) -> policy.ItemState:
    return policy.ItemState(
        seq=item.seq,
        key=item.key,
        depends_on=item.depends_on,
        attempts=item.attempts,
        next_attempt_at=item.next_attempt_at,
        status=item.status,
        last_error=item.last_error,
    )


def _outbound(item: Item, payload: bytes) -> Outbound:
    return Outbound(
        seq=item.seq,
        key=item.key,
        kind=item.kind,
        event_type=item.event_type,
        lane=item.lane,
        payload=payload,
        accepted_at=item.accepted_at,
        attempts=item.attempts,
    )
