"""Lane lifecycle: the transitions a store relies on, tested by passing `now`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.lanes.lifecycle import (
    TRANSITIONS,
    Event,
    LaneState,
    LaneStateError,
    Timers,
    alerts,
    apply,
    discovered,
    tick,
)

T = Timers(heartbeat_timeout_s=90, offline_warn_after_s=3600, stale_after_s=3 * 86400,
           retire_after_s=90 * 86400, retire_warn_before_s=14 * 86400)  # fmt: skip
DAY = 86400.0


def online_lane(now: float = 0.0):  # type: ignore[no-untyped-def]
    lane, _ = discovered("reg-7", now, address="10.0.0.7", lane_id="lane-7")
    lane, _ = apply(lane, Event.ENROLL, now, "by tech")
    lane, _ = apply(lane, Event.ONLINE, now)
    return lane


def test_full_path_discovered_to_online() -> None:
    lane, first = discovered("reg-7", 0.0, address="10.0.0.7")
    assert first.after == LaneState.DISCOVERED
    lane, t = apply(lane, Event.ENROLL, 10.0, "enrolled by ana")
    assert t is not None
    assert (t.before, t.after, t.reason) == (
        LaneState.DISCOVERED,
        LaneState.ENROLLED,
        "enrolled by ana",
    )
    lane, t = apply(lane, Event.ONLINE, 20.0)
    assert lane.state == LaneState.ONLINE
    assert lane.since == 20.0
    assert [h[1] for h in lane.history] == ["enrolled", "online"]


def test_new_address_keeps_identity_and_state() -> None:
    """A register re-announcing on a new IP is the same lane, not a twin."""
    lane = online_lane()
    lane, t = apply(lane, Event.DISCOVERED, 50.0, address="10.0.0.99")
    assert t is None
    assert lane.state == LaneState.ONLINE
    assert lane.address == "10.0.0.99"
    assert lane.device_id == "reg-7"


def test_unenrolled_register_cannot_go_online() -> None:
    lane, _ = discovered("rogue", 0.0)
    with pytest.raises(LaneStateError, match="online is not allowed when discovered"):
        apply(lane, Event.ONLINE, 1.0)


def test_last_will_makes_lane_offline_and_it_comes_back() -> None:
    lane = online_lane()
    lane, t = apply(lane, Event.OFFLINE, 100.0, "last will")
    assert t is not None
    assert lane.state == LaneState.OFFLINE
    lane, t = apply(lane, Event.ONLINE, 200.0)
    assert lane.state == LaneState.ONLINE


def test_missed_heartbeats_make_lane_offline_without_a_will() -> None:
    """If the last will was lost (broker restart), silence alone marks the lane offline."""
    lane = online_lane()
    lane, _ = apply(lane, Event.HEARTBEAT, 30.0)
    same, none = tick(lane, 30.0 + 89, T)
    assert none == []
    assert same.state == LaneState.ONLINE
    lane, transitions = tick(lane, 30.0 + 90, T)
    assert [t.after for t in transitions] == [LaneState.OFFLINE]


def test_stale_then_retired_with_alerts_long_before() -> None:
    lane = online_lane()
    lane, _ = apply(lane, Event.OFFLINE, 0.0)
    assert alerts(lane, 3000.0, T) == []
    assert [a.code for a in alerts(lane, 3600.0, T)] == ["OFFLINE_LONG"]
    lane, transitions = tick(lane, 3 * DAY, T)
    assert [t.after for t in transitions] == [LaneState.STALE]
    (alert,) = alerts(lane, 10 * DAY, T)
    assert (alert.code, alert.level) == ("STALE", "warning")
    (alert,) = alerts(lane, 77 * DAY, T)
    assert alert.level == "critical", "two weeks before retirement the alert must escalate"
    lane, transitions = tick(lane, 90 * DAY, T)
    assert [t.after for t in transitions] == [LaneState.RETIRED]


def test_a_month_off_lane_cascades_in_one_tick() -> None:
    lane = online_lane()
    lane, transitions = tick(lane, 100 * DAY, T)
    assert [t.after for t in transitions] == [LaneState.OFFLINE, LaneState.STALE, LaneState.RETIRED]


def test_stale_lane_that_returns_is_online_again() -> None:
    lane = online_lane()
    lane, _ = apply(lane, Event.OFFLINE, 0.0)
    lane, _ = tick(lane, 5 * DAY, T)
    assert lane.state == LaneState.STALE
    lane, _ = apply(lane, Event.ONLINE, 5 * DAY + 1)
    assert lane.state == LaneState.ONLINE


def test_retired_needs_re_enrollment() -> None:
    lane = online_lane()
    lane, _ = apply(lane, Event.RETIRE, 10.0, "replaced by tech")
    with pytest.raises(LaneStateError):
        apply(lane, Event.ONLINE, 11.0)
    lane, _ = apply(lane, Event.ENROLL, 12.0)
    assert lane.state == LaneState.ENROLLED


@given(st.lists(st.tuples(st.sampled_from(list(Event)), st.floats(0, 10 * DAY)), max_size=40))
def test_random_event_sequences_only_follow_the_table(
    events: list[tuple[Event, float]],
) -> None:
    """Whatever arrives, the lane only ever moves along the transition table; illegal events
    raise and change nothing."""
    lane = online_lane()
    now = 0.0
    for event, dt in events:
        now += dt
        before = lane
        try:
            lane, t = apply(lane, event, now)
        except LaneStateError:
            assert (before.state, event) not in TRANSITIONS
            lane = before
            continue
        assert lane.state == TRANSITIONS[(before.state, event)]
        assert (t is None) == (lane.state == before.state)
        lane, ts = tick(lane, now, T)
        for tr in ts:
            assert TRANSITIONS[(tr.before, tr.event)] == tr.after  # type: ignore[index]
