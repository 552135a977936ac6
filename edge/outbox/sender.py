"""The sender: drains the outbox to the cloud connector. The asyncio shell around the pure
delivery policy (edge.outbox.policy).

Theory of operation
-------------------
One loop, woken by a new append, a finished batch, an operator action, or the next due time
(at most ``idle_poll_s`` apart):

1. read due pending items in sequence order (``store.due``), skip those in flight;
2. look up the status of everything they depend on (``store.statuses``; absent = satisfied);
3. ask the policy for a plan: batches to send now (bounded by free concurrency slots and the
   connector's batch size; none while the WAN breaker is open or the cloud throttles us; one
   single-item probe while half-open), and why each held item waits;
4. start each batch as a task of the sender's TaskGroup; a batch task calls the connector,
   records every outcome in the store (delivered / retry later with backoff / parked), feeds
   the breaker, and wakes the loop.

When the breaker closes again (the WAN is back), items whose backoff grew during the outage are
made due at once, so the backlog starts draining immediately instead of waiting out its timers.

Upload never waits behind anything but its own dependencies: a parked item holds only the items
that depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge.metrics import Metrics
from edge.outbox import policy
from edge.outbox.store import Item, OutboxStore
from edge.settings import OutboxSettings
from edge.uplink.base import Connector, Outbound

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


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
        self._throttle_until = 0.0
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
        # Only an idle sender needs waking: while batches are in flight each one wakes the loop
        # when it finishes, and re-planning at every accepted sale during a drain starves the
        # event loop that acknowledges the sales (seen as a 1.4 s ack p99 in the bench).
        if self._running == 0:
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
            "waiting": dict(list(self.waiting.items())[:50]),
        }

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    now = self._clock()
                    await self._housekeeping(now)
                    if self._running < self._slots:
                        await self._plan_and_start(tg, now)
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(await self._idle_for(now)):
                            await self._wake.wait()
        finally:
            await self._connector.aclose()

    async def _plan_and_start(self, tg: asyncio.TaskGroup, now: float) -> None:
        capacity = self._slots - self._running
        limit = capacity * self._batch_max + 256
        # Keys in flight are left out by the query itself (reading them at every plan was most
        # of a drain's cost). Those in flight when the query starts stay out even if their
        # batch finishes during the await: the snapshot read before its commit still shows
        # them pending, and they would be sent again (harmless, the cloud is idempotent, but
        # wasted work).
        busy = set(self._inflight)
        due = [
            i
            for i in await self._store.due(now, limit, excluding=busy)
            if i.key not in self._inflight
        ]
        if not due:
            self.waiting = {}
            return
        deps = {d for item in due for d in item.depends_on}
        found = await self._store.statuses(deps) if deps else {}
        dependency_status: dict[str, policy.DependencyStatus] = {
            d: ("pending" if d in self._inflight else found.get(d, "absent")) for d in deps
        }
        by_key = {item.key: item for item in due}
        plan = policy.plan(
            [_state(item) for item in due],
            dependency_status=dependency_status,
            inflight=frozenset(self._inflight),
            capacity=capacity,
            batch_max=self._batch_max,
            breaker=self.breaker,
            throttle_until=self._throttle_until,
            now=now,
        )
        self.waiting = dict(plan.waiting)
        if plan.probe:
            self.breaker.begin_probe(now)
        for batch in plan.batches:
            items = [by_key[state.key] for state in batch]
            self._inflight.update(i.key for i in items)
            self._running += 1
            tg.create_task(self._send(items), name=f"outbox-batch:{items[0].seq}")

    async def _send(self, items: Sequence[Item]) -> None:
        slot_held = True
        try:
            payloads = await self._store.payloads([i.seq for i in items])
            outcomes = await self._connector.deliver([_outbound(i, payloads[i.seq]) for i in items])
            # The cloud has answered: the slot is free for the next batch while this one's
            # outcomes are recorded (its keys stay in flight until then).
            self._running -= 1
            slot_held = False
            self.wake()
            await self._record(items, outcomes)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A connector or store bug: the items stay pending and are tried again later.
            log.exception("outbox: batch starting at seq %d failed", items[0].seq)
        finally:
            self._inflight.difference_update(i.key for i in items)
            if slot_held:
                self._running -= 1
            self.batches_sent += 1
            self._pulse()
            self.wake()

    async def _record(self, items: Sequence[Item], outcomes: Sequence[policy.Outcome]) -> None:
        if len(outcomes) != len(items):
            raise RuntimeError(
                f"connector {self._connector.name} answered {len(outcomes)} outcomes "
                f"for {len(items)} items"
            )
        now = self._clock()
        was_closed = self.breaker.state == "closed"
        delivered: list[tuple[int, str]] = []
        parked: list[tuple[int, str, Any]] = []
        retry: list[tuple[int, int, float, str]] = []
        for item, outcome in zip(items, outcomes, strict=True):
            state = policy.apply_outcome(_state(item), outcome, now, self._schedule, self._rng)
            if isinstance(outcome, policy.Delivered):
                delivered.append((item.seq, outcome.record_id))
            elif isinstance(outcome, policy.Rejected):
                parked.append((item.seq, f"{outcome.code}: {outcome.message}", outcome.detail))
                log.warning("outbox: %s rejected by the cloud: %s", item.key, outcome.code)
            else:
                retry.append((item.seq, state.attempts, state.next_attempt_at, outcome.reason))
                self._metrics.outbox_retries.labels(outcome.kind).inc()
                if outcome.kind == "throttled" and outcome.retry_after:
                    self._throttle_until = max(self._throttle_until, now + outcome.retry_after)
        self.breaker.record(outcomes, now)
        if delivered:
            await self._store.mark_delivered(delivered, now=now)
            self._metrics.outbox_delivered.inc(len(delivered))
            self.rates._delivered += len(delivered)
        if parked:
            await self._store.mark_parked(parked, now=now)
            self._metrics.outbox_parked.inc(len(parked))
        if retry:
            await self._store.mark_retry(retry)
        if not was_closed and self.breaker.state == "closed":
            log.info("outbox: the cloud answers again; releasing backoff of waiting items")
            await self._release_backoff(now)

    async def _release_backoff(self, now: float) -> None:
        pending = await self._store.due(float("inf"), 1_000_000)
        late = policy.backoff_to_release([_state(i) for i in pending], now)
        if late:
            await self._store.release_backoff(late, now=now)

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
        events = [self._throttle_until, self.breaker.next_probe_at, await self._store.next_due_at()]
        future = [at - now for at in events if at is not None and at > now]
        return min([idle, *future])


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
