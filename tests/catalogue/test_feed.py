"""The register feed decisions (pure): delta, snapshot or nothing, and the cursor token."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.catalogue.errors import InvalidCursor
from edge.catalogue.feed import Cursor, FeedDecision, decide_feed, delta_size

EPOCH = "a" * 32
OTHER = "b" * 32


def decide(
    cursor: Cursor | None,
    *,
    version: int = 100,
    oldest: int = 40,
    delta: float = 10,
    snapshot: float = 1000,
    ratio: float = 1.0,
) -> FeedDecision:
    return decide_feed(
        cursor=cursor,
        epoch=EPOCH,
        version=version,
        oldest_available=oldest,
        delta_size=delta,
        snapshot_size=snapshot,
        snapshot_ratio=ratio,
    )


@pytest.mark.parametrize(
    ("cursor", "kw", "mode", "reason"),
    [
        (None, {}, "snapshot", "no_cursor"),
        (Cursor(OTHER, 100), {}, "snapshot", "other_catalogue"),
        (Cursor(EPOCH, 101), {}, "snapshot", "cursor_ahead"),
        (Cursor(EPOCH, 100), {}, "current", "current"),
        # Behind the oldest cursor available: a deletion may have been pruned.
        (Cursor(EPOCH, 39), {}, "snapshot", "stale"),
        (Cursor(EPOCH, 40), {}, "delta", "delta_smaller"),
        (Cursor(EPOCH, 90), {}, "delta", "delta_smaller"),
        # A month off: more changes than the catalogue holds.
        (Cursor(EPOCH, 41), {"delta": 1001}, "snapshot", "delta_larger"),
        (Cursor(EPOCH, 41), {"delta": 1000}, "delta", "delta_smaller"),
        (Cursor(EPOCH, 41), {"delta": 1001, "ratio": 1.5}, "delta", "delta_smaller"),
        (Cursor(EPOCH, 41), {"delta": 400, "ratio": 0.25}, "snapshot", "delta_larger"),
        # Rules apply in order: a stale cursor is a snapshot however small its delta.
        (Cursor(EPOCH, 0), {"delta": 1}, "snapshot", "stale"),
        # An empty catalogue's register at 0 is current, not stale.
        (Cursor(EPOCH, 0), {"version": 0, "oldest": 0}, "current", "current"),
    ],
)
def test_decide_feed(cursor: Cursor | None, kw: dict[str, float], mode: str, reason: str) -> None:
    decision = decide(cursor, **kw)  # type: ignore[arg-type]
    assert (decision.mode, decision.reason) == (mode, reason)
    assert decision.detail


def test_a_cursor_older_than_the_tombstone_retention_always_gets_a_snapshot() -> None:
    """The store raises the oldest cursor available to the last pruned tombstone; a register
    below it could miss a deletion, whatever the sizes say."""
    for seq in range(40):
        assert decide(Cursor(EPOCH, seq), delta=0, snapshot=10**9).reason == "stale"


@given(
    seq=st.integers(0, 10_000),
    version=st.integers(0, 10_000),
    oldest=st.integers(0, 10_000),
    delta=st.floats(0, 1e7),
    snapshot=st.floats(0, 1e7),
)
def test_a_delta_is_only_offered_when_it_is_safe_and_smaller(
    seq: int, version: int, oldest: int, delta: float, snapshot: float
) -> None:
    decision = decide(
        Cursor(EPOCH, seq), version=version, oldest=oldest, delta=delta, snapshot=snapshot
    )
    if decision.mode == "delta":
        assert oldest <= seq < version
        assert delta <= snapshot
    if decision.mode == "current":
        assert seq == version


def test_tombstones_weigh_less_than_records() -> None:
    assert delta_size(10, 0) == 10
    assert delta_size(10, 5) == 11


def test_cursor_token_round_trips() -> None:
    cursor = Cursor(EPOCH, 12345)
    assert str(cursor) == f"{EPOCH}:12345"
    assert Cursor.parse(str(cursor)) == cursor


@pytest.mark.parametrize(
    "token",
    [
        "",
        EPOCH,
        f"{EPOCH}:",
        f"{EPOCH}:-1",
        f"{EPOCH}:1.5",
        f"{EPOCH}:١٢",  # Arabic-Indic digits pass str.isdigit()
        f"{EPOCH}:{'9' * 20}",
        f"{EPOCH.upper()}:1",
        f"{'a' * 31}:1",
        "not-a-cursor",
    ],
)
def test_a_cursor_that_cannot_be_read_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.parse(token)
