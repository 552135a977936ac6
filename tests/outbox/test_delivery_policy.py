"""The delivery policy (pure): backoff, breaker, dependency ordering. Time is passed in."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.outbox.policy import (
    BreakerError,
    CircuitBreaker,
    Delivered,
    ItemState,
    Rejected,
    RetryLater,
    RetrySchedule,
    apply_outcome,
    plan,
)

RNG = random.Random(0)


def item(
    seq: int, key: str | None = None, deps: tuple[str, ...] = (), at: float = 0.0
) -> ItemState:
    return ItemState(seq=seq, key=key or f"t{seq}", depends_on=deps, attempts=0,
                     next_attempt_at=at, status="pending")  # fmt: skip


def plan_for(items: list[ItemState], **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "dependency_status": {},
        "inflight": frozenset(),
        "capacity": 4,
        "batch_max": 10,
        "breaker": CircuitBreaker(),
        "throttle_until": 0.0,
        "now": 100.0,
    }
    args.update(kw)
    return plan(items, **args)  # type: ignore[arg-type]


CONN = RetryLater("refused", "connection")


@given(attempts=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_backoff_grows_is_capped_and_never_below_half(attempts: int, seed: int) -> None:
    schedule = RetrySchedule(base=1.0, factor=2.0, cap=300.0, jitter=0.5)
    delay = schedule.delay(attempts, random.Random(seed))
    nominal = min(300.0, 2.0 ** (attempts - 1))
    assert nominal / 2 <= delay <= nominal


def test_retry_after_is_a_floor() -> None:
    schedule = RetrySchedule(base=0.1, cap=1.0)
    after = apply_outcome(item(1), RetryLater("429", "throttled", 30.0), 100.0, schedule, RNG)
    assert after.next_attempt_at >= 130.0
    assert after.attempts == 1
    assert after.status == "pending"


def test_outcomes_move_items() -> None:
    schedule = RetrySchedule()
    assert apply_outcome(item(1), Delivered("r1"), 0, schedule, RNG).status == "delivered"
    parked = apply_outcome(item(1), Rejected("ITEM", "unknown item 9"), 0, schedule, RNG)
    assert (parked.status, parked.last_error) == ("parked", "ITEM: unknown item 9")
    with pytest.raises(ValueError, match="only pending"):
        apply_outcome(parked, Delivered("r"), 0, schedule, RNG)


def test_breaker_opens_only_on_consecutive_connection_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_base=2.0, cooldown_cap=8.0)
    breaker.record([CONN], 0)
    breaker.record([CONN], 1)
    breaker.record([RetryLater("503", "server")], 2)  # the WAN is up: count reset
    breaker.record([CONN], 3)
    breaker.record([Rejected("X", "no")], 4)  # a business rejection proves the WAN too
    assert breaker.state == "closed"
    for t in (5, 6, 7):
        breaker.record([RetryLater("timeout", "timeout")], t)
    assert breaker.state == "open"
    assert breaker.next_probe_at == 9.0


def test_half_open_allows_one_probe_and_doubles_cooldown_up_to_cap() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_base=2.0, cooldown_cap=5.0)
    breaker.record([CONN], 0)
    assert breaker.gate(1.0) == "blocked"
    assert breaker.gate(2.0) == "probe"
    breaker.begin_probe(2.0)
    assert breaker.gate(2.5) == "blocked", "only one probe in flight"
    with pytest.raises(BreakerError):
        breaker.begin_probe(2.5)
    breaker.record([CONN], 3.0)
    assert (breaker.state, breaker.next_probe_at) == ("open", 7.0)  # cooldown 4
    assert breaker.gate(7.0) == "probe"
    breaker.begin_probe(7.0)
    breaker.record([CONN], 7.5)
    assert breaker.next_probe_at == 12.5  # capped at 5
    assert breaker.gate(12.5) == "probe"
    breaker.begin_probe(12.5)
    breaker.record([Delivered("r")], 13.0)
    assert breaker.state == "closed"
    assert breaker.gate(13.0) == "send"


def test_the_breaker_knows_since_when_the_cloud_is_down_across_failed_probes() -> None:
    """What a technician wants to know at 7 a.m.: since when, not since the last probe."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown_base=2.0)
    breaker.record([CONN], 100.0)
    breaker.gate(102.0)
    breaker.begin_probe(102.0)
    breaker.record([CONN], 102.5)  # the probe failed: open again
    assert (breaker.opened_at, breaker.snapshot()["down_since"]) == (102.5, 100.0)
    breaker.gate(106.5)
    breaker.begin_probe(106.5)
    breaker.record([Delivered("r")], 107.0)
    assert breaker.snapshot()["down_since"] is None
    breaker.record([CONN], 200.0)
    assert breaker.down_since == 200.0, "a new outage"


def test_a_probe_that_was_not_sent_lets_another_go_without_a_new_cooldown() -> None:
    """The probe's item could not be sent (its payload was damaged on disk): nothing was
    learnt about the WAN, so the next plan probes again at once, the cooldown unchanged."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown_base=2.0)
    breaker.record([CONN], 0)
    assert breaker.gate(2.0) == "probe"
    breaker.begin_probe(2.0)
    assert breaker.gate(2.0) == "blocked"
    breaker.cancel_probe()
    assert (breaker.state, breaker.gate(2.1), breaker.cooldown) == ("half_open", "probe", 2.0)


def test_plan_batches_in_seq_order_within_capacity() -> None:
    items = [item(i) for i in range(1, 46)]
    result = plan_for(items, capacity=3, batch_max=10)
    assert [len(b) for b in result.batches] == [10, 10, 10]
    assert [i.seq for i in result.batches[0]] == list(range(1, 11))


def test_return_waits_for_its_sale_and_customer_before_sale() -> None:
    sale = item(1, "sale-1", deps=("customer:c9",))
    ret = item(2, "ret-1", deps=("sale-1",))
    result = plan_for(
        [sale, ret], dependency_status={"customer:c9": "pending", "sale-1": "pending"}
    )
    assert result.batches == []
    assert result.waiting == {
        "sale-1": "waits for customer:c9 (pending)",
        "ret-1": "waits for sale-1 (pending)",
    }
    result = plan_for([sale, ret], dependency_status={"customer:c9": "delivered",
                                                      "sale-1": "pending"})  # fmt: skip
    assert [i.key for b in result.batches for i in b] == ["sale-1"]


def test_parked_dependency_blocks_only_its_dependents_and_says_why() -> None:
    items = [item(1, "ret-1", deps=("sale-x",)), item(2, "other"), item(3, "third")]
    result = plan_for(items, dependency_status={"sale-x": "parked"})
    assert [i.key for b in result.batches for i in b] == ["other", "third"]
    assert result.waiting == {"ret-1": "blocked by parked sale-x"}


def test_absent_dependency_is_satisfied() -> None:
    """A return of another store's sale (not in this outbox) goes at once."""
    result = plan_for([item(1, "ret", deps=("other-store-sale",))])
    assert [i.key for b in result.batches for i in b] == ["ret"]


def test_inflight_and_not_due_items_are_skipped() -> None:
    result = plan_for(
        [item(1), item(2, at=500.0), item(3), item(4, "t4", deps=("t1",))],
        inflight=frozenset({"t1"}),
    )
    assert [i.key for b in result.batches for i in b] == ["t3"]
    assert result.waiting == {"t4": "waits for t1 (pending)"}


def test_open_breaker_and_throttle_send_nothing_half_open_one_item() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_base=10.0)
    breaker.record([CONN], 95.0)
    items = [item(i) for i in range(1, 5)]
    assert plan_for(items, breaker=breaker).blocked == "WAN breaker open"
    probe = plan_for(items, breaker=breaker, now=106.0)
    assert probe.probe is True
    assert [[i.key for i in b] for b in probe.batches] == [["t1"]]
    throttled = plan_for(items, throttle_until=130.0)
    assert throttled.batches == []
    assert throttled.blocked is not None
    assert "throttled" in throttled.blocked


@given(
    outcomes=st.lists(
        st.sampled_from(["ok", "conn", "server", "reject", "throttle"]), min_size=1, max_size=60
    ),
    deps=st.lists(st.integers(0, 11), min_size=12, max_size=12),
)
def test_random_runs_keep_the_invariants_and_drain_when_good(
    outcomes: list[str], deps: list[int]
) -> None:
    """Drive 12 items with random outcomes: an item is never planned while in flight, while a
    dependency is undelivered, or after it is delivered/parked; once the cloud only says yes,
    every item not blocked by a parked one is delivered."""
    keys = [f"k{i}" for i in range(12)]
    states = {
        k: ItemState(
            seq=i,
            key=k,
            depends_on=(keys[deps[i]],) if deps[i] < i else (),
            attempts=0,
            next_attempt_at=0.0,
            status="pending",
        )
        for i, k in enumerate(keys)
    }
    breaker = CircuitBreaker(failure_threshold=2, cooldown_base=1.0, cooldown_cap=4.0)
    schedule = RetrySchedule(base=0.5, cap=4.0)
    rng = random.Random(1)
    now = 0.0
    script = iter(outcomes)
    for _ in range(400):
        now += 1.0
        pending = [s for s in sorted(states.values(), key=lambda s: s.seq) if s.status == "pending"]
        if not pending:
            break
        dep_status = {s.key: s.status for s in states.values()}
        result = plan(pending, dependency_status=dep_status, inflight=frozenset(), capacity=2,  # type: ignore[arg-type]
                      batch_max=3, breaker=breaker, throttle_until=0.0, now=now)  # fmt: skip
        if result.probe:
            breaker.begin_probe(now)
        planned = [s for b in result.batches for s in b]
        assert len({s.key for s in planned}) == len(planned)
        for s in planned:
            assert s.status == "pending"
            for d in s.depends_on:
                assert states[d].status == "delivered"
        for batch in result.batches:
            word = next(script, "ok")
            outcome = {
                "ok": Delivered("r"),
                "conn": CONN,
                "server": RetryLater("503", "server"),
                "reject": Rejected("NO", "refused"),
                "throttle": RetryLater("429", "throttled", 1.0),
            }[word]
            breaker.record([outcome] * len(batch), now)
            for s in batch:
                states[s.key] = apply_outcome(s, outcome, now, schedule, rng)

    def behind_parked(key: str) -> bool:  # transitively: k11 -> k1 -> parked k0
        return any(
            states[d].status == "parked" or (states[d].status == "pending" and behind_parked(d))
            for d in states[key].depends_on
        )

    for s in states.values():
        assert s.status in ("delivered", "parked") or behind_parked(s.key), s
