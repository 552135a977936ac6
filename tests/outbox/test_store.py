"""The outbox file: durable appends with group commit, idempotency, full disk, bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.outbox.salvage import FILED_COLUMNS
from edge.outbox.store import (
    Appended,
    Entry,
    KeyConflict,
    OutboxError,
    OutboxStore,
    PayloadDamage,
    StorageFull,
    StoreClosed,
    UnknownItem,
    WrongState,
)
from edge.outbox.validate import validate
from edge.sim.damage import flip_a_bit_in, flip_first_bit_of
from edge.sim.registers import make_sale

T0 = 1_800_000_000.0


def entry(key: str, body: str = "x", **kw: object) -> Entry:
    payload = json.dumps({"txn_id": key, "body": body}).encode()
    return Entry(
        key=key,
        kind="sale",
        event_type="com.storeedge.sale.v1",
        lane="lane-1",
        payload=payload,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def store(tmp_path: Path) -> OutboxStore:
    s = OutboxStore(tmp_path / "outbox.db")
    await s.open()
    yield s  # type: ignore[misc]
    await s.close()


def rows(path: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT seq, key, status FROM items ORDER BY seq"))


async def test_append_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    """The ack promise: once append returns, another connection (another process after a
    crash) sees the row."""
    s = OutboxStore(tmp_path / "outbox.db")
    await s.open()
    appended = await s.append(entry("t-1"), now=T0)
    assert rows(tmp_path / "outbox.db") == [(appended.seq, "t-1", "pending")]
    await s.close()
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_resent_transaction_gets_its_original_seq_and_no_second_row(
    store: OutboxStore,
) -> None:
    first = await store.append(entry("t-1"), now=T0)
    again = await store.append(entry("t-1"), now=T0 + 60)
    assert again.seq == first.seq
    assert again.duplicate is True
    assert first.duplicate is False
    assert again.accepted_at == T0
    assert rows(store.path) == [(first.seq, "t-1", "pending")]


async def test_same_id_different_content_is_a_conflict_only_for_that_entry(
    store: OutboxStore,
) -> None:
    """A register reusing an id for another sale is refused; lanes in the same commit group
    are not affected."""
    await store.append(entry("t-1", "original"), now=T0)
    results = await asyncio.gather(
        store.append(entry("t-1", "different"), now=T0),
        store.append(entry("t-2"), now=T0),
        return_exceptions=True,
    )
    assert isinstance(results[0], KeyConflict)
    assert not isinstance(results[1], BaseException)
    assert [k for _, k, _ in rows(store.path)] == ["t-1", "t-2"]
    item = await store.get("t-1")
    assert item is not None
    assert json.loads(item.payload)["body"] == "original"


async def test_concurrent_appends_share_commits(store: OutboxStore) -> None:
    """Group commit: 300 concurrent appends need far fewer than 300 commits (fsyncs), and each
    caller gets its own distinct sequence number."""
    results = await asyncio.gather(*(store.append(entry(f"t-{i}"), now=T0) for i in range(300)))
    seqs = [r.seq for r in results]
    assert len(set(seqs)) == 300
    assert store.entries_committed == 300
    assert store.groups_committed < 100


@contextlib.contextmanager
def writer_wedged(path: Path) -> Iterator[None]:
    """Another process holds the outbox's write lock: the store's writer thread waits for it
    (SQLite's busy timeout) in whatever write it is running, and the appends queued behind
    that write meanwhile become one group once the lock is released."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("COMMIT")


async def test_a_resend_racing_its_original_into_one_group_is_one_row(
    store: OutboxStore,
) -> None:
    """A register that re-sends before its first ack: both copies can land in the same commit
    group. One row, both callers get its sequence number, only the first is new; the same id
    with other content in that group is a conflict; sequence numbers follow arrival order."""
    with writer_wedged(store.path):
        wedge = asyncio.create_task(store.mark_retry([]))  # a write the writer waits in
        appends = asyncio.gather(
            store.append(entry("t-1"), now=T0),
            store.append(entry("t-2"), now=T0),
            store.append(entry("t-1"), now=T0),
            store.append(entry("t-2", "different"), now=T0),
            store.append(entry("t-3"), now=T0),
            return_exceptions=True,
        )
        await asyncio.sleep(0)  # the five appends are queued behind the wedged write
    await wedge
    results = await appends
    assert store.groups_committed == 1
    first, second, resend, conflict, third = results
    assert isinstance(first, Appended)
    assert isinstance(second, Appended)
    assert isinstance(third, Appended)
    assert resend == Appended(first.seq, True, T0)
    assert isinstance(conflict, KeyConflict)
    assert (first.duplicate, second.duplicate, third.duplicate) == (False, False, False)
    assert first.seq < second.seq < third.seq
    assert rows(store.path) == [
        (first.seq, "t-1", "pending"),
        (second.seq, "t-2", "pending"),
        (third.seq, "t-3", "pending"),
    ]


async def test_full_disk_refuses_whole_group_and_recovers(tmp_path: Path) -> None:
    """SQLITE_FULL (the file cannot grow) fails the appends with the retryable StorageFull,
    leaves no partial write, and appends work again once space is back."""
    path = tmp_path / "outbox.db"
    s = OutboxStore(path, max_page_count=40)
    await s.open()
    big = "y" * 3000
    accepted = 0
    refusal: StorageFull | None = None
    for i in range(1000):
        try:
            await s.append(entry(f"t-{i}", big), now=T0)
        except StorageFull as exc:
            refusal = exc
            break
        accepted += 1
    assert refusal is not None, "the file was never full"
    assert refusal.retryable
    assert accepted > 0
    assert len(rows(path)) == accepted, "a refused append must leave nothing behind"
    await s.close()
    roomy = OutboxStore(path)
    await roomy.open()
    await roomy.append(entry("after", big), now=T0)
    assert len(rows(path)) == accepted + 1
    await roomy.close()


async def test_a_group_too_big_for_the_disk_is_refused_whole(tmp_path: Path) -> None:
    """Concurrent appends that share one commit (100 x 3 KB), which no longer fits: every one
    of them is refused with StorageFull and none of them is written (the group is one
    statement, rolled back as a whole)."""
    path = tmp_path / "outbox.db"
    s = OutboxStore(path, max_page_count=60)
    await s.open()
    await s.append(entry("before"), now=T0)
    big = "y" * 3000
    results = await asyncio.gather(
        *(s.append(entry(f"t-{i}", big), now=T0) for i in range(100)), return_exceptions=True
    )
    assert s.groups_committed == 1, "only the first append committed"
    assert all(isinstance(r, StorageFull) for r in results)
    assert [k for _, k, _ in rows(path)] == ["before"]
    await s.close()


async def test_groups_stay_within_sqlite_parameter_limit(tmp_path: Path) -> None:
    """A configured max_group larger than one statement can carry is capped: 3,500 concurrent
    appends are all committed (in more than one group), none refused for "too many SQL
    variables"."""
    s = OutboxStore(tmp_path / "outbox.db", max_group=10_000)
    await s.open()
    results = await asyncio.gather(*(s.append(entry(f"t-{i}"), now=T0) for i in range(3500)))
    assert len({r.seq for r in results}) == 3500
    assert s.groups_committed >= 2
    await s.close()
    assert len(rows(tmp_path / "outbox.db")) == 3500


async def test_due_respects_backoff_and_order(store: OutboxStore) -> None:
    for i in range(5):
        await store.append(entry(f"t-{i}"), now=T0)
    items = await store.due(T0, 10)
    assert [i.key for i in items] == [f"t-{i}" for i in range(5)]
    await store.mark_retry([(items[0].seq, 1, T0 + 30, "timeout")])
    assert [i.key for i in await store.due(T0 + 1, 10)] == ["t-1", "t-2", "t-3", "t-4"]
    assert [i.key for i in await store.due(T0 + 31, 2)] == ["t-0", "t-1"]
    # Keys in flight are left out, and the limit counts what is left.
    in_flight = await store.due(T0 + 31, 2, excluding={"t-0", "t-2"})
    assert [i.key for i in in_flight] == ["t-1", "t-3"]
    assert await store.next_due_at() == T0


async def test_release_backoff_makes_only_waiting_pending_items_due_in_short_writes(
    store: OutboxStore,
) -> None:
    """The WAN is back: every pending item still backing off becomes due now, in writes of at
    most ``limit`` (new sales commit in between); due, parked and delivered items are left as
    they are."""
    seqs = {k: (await store.append(entry(k), now=T0)).seq for k in ("a", "b", "c", "d", "p", "x")}
    now = T0 + 10
    await store.mark_retry(
        [(seqs[k], 3, T0 + 600 + i, "connection refused") for i, k in enumerate("abc")]
    )
    await store.mark_retry([(seqs["p"], 3, T0 + 600, "connection refused")])
    await store.mark_parked([(seqs["p"], "REJECTED", None)], now=now)
    await store.mark_delivered([(seqs["x"], "rec-1")], now=now)
    assert [i.key for i in await store.due(now, 10)] == ["d"]

    assert await store.release_backoff(now=now, limit=2) == 2
    assert [i.key for i in await store.due(now, 10)] == ["a", "b", "d"]  # soonest due first
    assert await store.release_backoff(now=now, limit=2) == 1
    assert await store.release_backoff(now=now, limit=2) == 0
    due = await store.due(now, 10)
    assert [(i.key, i.next_attempt_at) for i in due] == [
        ("a", now),
        ("b", now),
        ("c", now),
        ("d", T0),
    ]
    assert [i.attempts for i in due] == [3, 3, 3, 0]  # the attempts so far are kept
    parked = await store.get("p")
    assert parked is not None
    assert (parked.status, parked.next_attempt_at) == ("parked", T0 + 600)


async def test_outcomes_are_recorded(store: OutboxStore) -> None:
    a = await store.append(entry("a"), now=T0)
    b = await store.append(entry("b"), now=T0)
    await store.mark_delivered([(a.seq, "cashSale/17")], now=T0 + 5)
    await store.mark_parked(
        [(b.seq, "ITEM_UNKNOWN: item 9 is unknown", {"o:errorCode": "X"})], now=T0 + 5
    )
    got_a, got_b = await store.get("a"), await store.get("b")
    assert got_a is not None
    assert got_b is not None
    assert (got_a.status, got_a.record_id, got_a.delivered_at) == (
        "delivered",
        "cashSale/17",
        T0 + 5,
    )
    assert got_b.status == "parked"
    assert got_b.error_detail == {"o:errorCode": "X"}
    assert await store.statuses(["a", "b", "zz"]) == {"a": "delivered", "b": "parked"}
    stats = await store.stats()
    assert (stats.pending, stats.parked, stats.delivered) == (0, 1, 1)
    assert stats.db_bytes > 0
    # A late duplicate outcome for an item no longer pending changes nothing.
    await store.mark_retry([(a.seq, 9, T0 + 99, "late")])
    assert (await store.get("a")).status == "delivered"  # type: ignore[union-attr]


async def test_the_oldest_pending_age_follows_the_item_waiting_longest(store: OutboxStore) -> None:
    """`edge outbox status` shows how long the oldest sale has waited: the first still pending,
    whatever happened to those before it, and nothing once all are out."""
    empty = await store.stats()
    a = await store.append(entry("a"), now=T0)
    b = await store.append(entry("b"), now=T0 + 60)
    c = await store.append(entry("c"), now=T0 + 120)
    first = await store.stats()
    await store.mark_delivered([(a.seq, "r-a")], now=T0 + 200)
    after_a = await store.stats()
    await store.mark_parked([(b.seq, "X: refused", None)], now=T0 + 200)
    after_b = await store.stats()
    await store.mark_delivered([(c.seq, "r-c")], now=T0 + 200)
    none_left = await store.stats()
    ages = [s.oldest_pending_at for s in (empty, first, after_a, after_b, none_left)]
    assert ages == [None, T0, T0 + 60, T0 + 120, None], "a parked item is not waiting"


async def test_operator_retry_and_park_are_audited(store: OutboxStore) -> None:
    a = await store.append(entry("a"), now=T0)
    await store.append(entry("b"), now=T0)
    await store.mark_parked([(a.seq, "rejected", None)], now=T0)
    item = await store.retry("a", actor="tech:ana", reason="item mapped in NetSuite", now=T0 + 9)
    assert (item.status, item.next_attempt_at) == ("pending", T0 + 9)
    parked = await store.park("b", actor="tech:ana", reason="duplicate till", now=T0 + 10)
    assert parked.status == "parked"
    with pytest.raises(WrongState, match="pending already"):
        await store.retry("a", actor="tech:ana", reason="again", now=T0)
    with pytest.raises(UnknownItem):
        await store.park("nope", actor="tech:ana", reason="x", now=T0)
    assert await store.retry_all_parked(actor="tech:bo", reason="bulk", now=T0 + 11) == 1
    log = await store.audit_log()
    assert [(e["key"], e["action"], e["actor"]) for e in log] == [
        ("a", "parked", "cloud"),
        ("a", "retry", "tech:ana"),
        ("b", "park", "tech:ana"),
        ("b", "retry", "tech:bo"),
    ]


async def test_operators_name_an_item_by_txn_id_or_by_seq(store: OutboxStore) -> None:
    """`edge outbox list` shows the seq first: it names the item as well as its txn id does.
    A txn id may be all digits; where it is also another item's seq, the txn id wins."""
    first = await store.append(entry("t-1"), now=T0)
    digits = await store.append(entry(str(first.seq)), now=T0)  # txn id "1"
    third = await store.append(entry("t-3"), now=T0)
    assert (await store.find("t-3")).seq == third.seq  # type: ignore[union-attr]
    assert (await store.find(str(third.seq))).key == "t-3"  # type: ignore[union-attr]
    assert (await store.find(str(first.seq))).seq == digits.seq  # type: ignore[union-attr]
    assert await store.find("99") is None
    assert await store.find("9" * 40) is None, "beyond SQLite's integers: no item, no error"
    parked = await store.park(str(third.seq), actor="tech:ana", reason="training", now=T0 + 1)
    assert (parked.key, parked.status) == ("t-3", "parked")
    with pytest.raises(UnknownItem):
        await store.retry("99", actor="tech:ana", reason="x", now=T0 + 2)


async def test_retry_posts_a_delivered_item_again(store: OutboxStore) -> None:
    """The cloud lost or someone deleted its record: a technician's retry makes the delivered
    item pending again, due now, with the old record id in its last error; a pending or
    delivered item cannot be parked from under the sender."""
    a = await store.append(entry("a"), now=T0)
    await store.mark_delivered([(a.seq, "rec-7")], now=T0 + 1)
    with pytest.raises(WrongState, match="delivered"):
        await store.park("a", actor="tech:ana", reason="x", now=T0 + 2)
    item = await store.retry("a", actor="tech:ana", reason="deleted in the ERP", now=T0 + 3)
    assert (item.status, item.next_attempt_at, item.record_id, item.delivered_at) == (
        "pending", T0 + 3, None, None,
    )  # fmt: skip
    assert item.last_error == "re-sent by tech:ana (was record rec-7): deleted in the ERP"
    assert [i.key for i in await store.due(T0 + 3, 10)] == ["a"]
    await store.mark_delivered([(a.seq, "rec-8")], now=T0 + 4)
    assert (await store.get("a")).record_id == "rec-8"  # type: ignore[union-attr]
    assert [(e["action"], e["reason"]) for e in await store.audit_log("a")] == [
        ("resend", "deleted in the ERP")
    ]


async def test_prune_removes_only_old_delivered(store: OutboxStore) -> None:
    old = await store.append(entry("old"), now=T0)
    new = await store.append(entry("new"), now=T0)
    await store.append(entry("pending"), now=T0)
    await store.mark_delivered([(old.seq, "r1")], now=T0)
    await store.mark_delivered([(new.seq, "r2")], now=T0 + 86400)
    assert await store.prune_delivered(older_than=T0 + 3600) == 1
    assert [k for _, k, _ in rows(store.path)] == ["new", "pending"]


async def test_a_cancelled_caller_leaves_its_group_committed(store: OutboxStore) -> None:
    """A lane that gives up waiting (its request timed out) does not take the sales of the
    lanes sharing its commit with it, nor its own: the entry is on disk, and its re-send gets
    the original sequence number."""
    with writer_wedged(store.path):
        wedge = asyncio.create_task(store.mark_retry([]))
        given_up = asyncio.create_task(store.append(entry("t-1"), now=T0))
        other = asyncio.create_task(store.append(entry("t-2"), now=T0))
        await asyncio.sleep(0)
        given_up.cancel()
        await asyncio.sleep(0)
    await wedge
    assert given_up.cancelled()
    second = await other
    resent = await store.append(entry("t-1"), now=T0 + 5)
    assert resent.duplicate
    assert resent.seq < second.seq
    assert [key for _, key, _ in rows(store.path)] == ["t-1", "t-2"]


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    """Once closed, the store refuses appends, bookkeeping and reads alike with the retryable
    StoreClosed (the intake answers UNAVAILABLE, the console 503) instead of leaving a caller
    waiting or failing on a thread pool that has shut down."""
    s = OutboxStore(tmp_path / "outbox.db")
    await s.open()
    seq = (await s.append(entry("t-1"), now=T0)).seq
    await s.close()
    with pytest.raises(StoreClosed):
        await s.append(entry("t-2"), now=T0)
    with pytest.raises(StoreClosed):
        await s.mark_delivered([(seq, "r-1")], now=T0)
    with pytest.raises(StoreClosed):
        await s.get("t-1")
    with pytest.raises(StoreClosed):
        await s.stats()
    assert rows(tmp_path / "outbox.db") == [(seq, "t-1", "pending")]


async def test_a_failed_open_stops_its_writer(tmp_path: Path) -> None:
    """An outbox file from a newer hub is refused at open (no downgrade), and the refused
    store leaves no writer thread behind."""
    path = tmp_path / "outbox.db"
    s = OutboxStore(path)
    await s.open()
    await s.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    before = {t.name for t in threading.enumerate()}
    newer = OutboxStore(path)
    with pytest.raises(OutboxError, match="downgrade refused"):
        await newer.open()
    assert "outbox-writer" not in {t.name for t in threading.enumerate()} - before


async def test_close_finishes_queued_appends(tmp_path: Path) -> None:
    """Appends queued when the hub stops are still written and acknowledged."""
    s = OutboxStore(tmp_path / "outbox.db")
    await s.open()
    tasks = [asyncio.create_task(s.append(entry(f"t-{i}"), now=T0)) for i in range(50)]
    await asyncio.sleep(0)
    await s.close()
    results = await asyncio.gather(*tasks)
    assert len({r.seq for r in results}) == 50
    assert len(rows(tmp_path / "outbox.db")) == 50


async def test_the_hub_s_store_knows_whether_its_last_run_closed_it(tmp_path: Path) -> None:
    """open(mark_running=True) records the run until close(); the next such open reports a
    run that ended without close() (a crash, a power cut) with the last acceptance time it
    holds. A tool opening the file beside the hub neither sets nor clears the record."""
    path = tmp_path / "outbox.db"
    hub = OutboxStore(path)
    await hub.open(mark_running=True)
    assert hub.unclean_stop is None, "a new file"
    await hub.append(entry("a"), now=T0)
    await hub.append(entry("b"), now=T0 + 5)
    tool = OutboxStore(path)
    await tool.open()
    await tool.close()
    crashed = OutboxStore(path)  # the first one never closes: its process died
    await crashed.open(mark_running=True)
    assert crashed.unclean_stop is not None
    assert crashed.unclean_stop.last_accepted_at == T0 + 5
    await crashed.close()
    again = OutboxStore(path)
    await again.open(mark_running=True)
    assert again.unclean_stop is None, "closed cleanly"
    await again.close()
    await hub.close()


@pytest.mark.parametrize("where", ["payload", "digest"])
async def test_a_resend_repairs_a_row_damaged_on_disk(tmp_path: Path, where: str) -> None:
    """A bit flipped inside a stored payload (or inside its digest) leaves the file valid;
    ``payloads`` answers None for the row, so the sender never posts it. The register's re-send
    of the same content repairs the row (a parked item is due again, audited), and is still
    a duplicate for the register. Other content under the same id is still a conflict."""
    path = tmp_path / "outbox.db"
    before = OutboxStore(path)
    await before.open()
    first = await before.append(entry("t-1", "basket of 41.09"), now=T0)
    await before.append(entry("t-2", "basket of 51.09"), now=T0)
    await before.close()
    if where == "payload":
        flip_a_bit_in(path, b'"txn_id": "t-1"', b"basket of ")
    else:
        flip_first_bit_of(path, entry("t-1", "basket of 41.09").digest)
    store = OutboxStore(path)
    await store.open()
    try:
        damaged = await store.payloads([first.seq, first.seq + 1], now=T0)
        parked = await store.park_damaged([first.seq, first.seq + 1], "damaged", now=T0)
        asked = await store.payload_damage()
        conflict = await asyncio.gather(
            store.append(entry("t-1", "basket of 99.99"), now=T0 + 5), return_exceptions=True
        )
        repair = await store.append(entry("t-1", "basket of 41.09"), now=T0 + 9)
        repaired = await store.get("t-1")
        audit = await store.audit_log("t-1")
        after = (await store.payloads([first.seq], now=T0 + 9), await store.payload_damage())
        # The sender read it damaged before the re-send: its park comes too late, and is not
        # done (a repaired sale parked for damage would never be re-sent again).
        late = await store.park_damaged([first.seq], "damaged", now=T0 + 10)
        still = await store.get("t-1")
    finally:
        await store.close()
    assert damaged == {first.seq: None, first.seq + 1: entry("t-2", "basket of 51.09").payload}
    assert parked == [first.seq], "only the damaged one"
    assert asked == PayloadDamage(items=1, first_seq=first.seq, first_accepted_at=T0)
    assert isinstance(conflict[0], KeyConflict), "other content is still refused"
    assert repair == Appended(first.seq, True, T0, repaired=True)
    assert repaired is not None
    assert (repaired.status, repaired.next_attempt_at) == ("pending", T0 + 9), "due again"
    assert [(a["action"], a["actor"]) for a in audit] == [
        ("parked", "hub"),
        ("repair", "lane lane-1"),
    ]
    assert after == ({first.seq: entry("t-1", "basket of 41.09").payload}, None)
    assert late == []
    assert still is not None
    assert still.status == "pending"


def sale_entry(number: int, lane: str, customer: str | None = None) -> Entry:
    """A real sale as the intake files it (its columns read from it: Entry.of). The same
    arguments give the same bytes, whenever it is called."""
    sale = make_sale(store_id="s-1", lane_id=lane, number=number, rng=random.Random(number))
    sale["register_time"] = "2026-11-24T08:00:00Z"  # make_sale stamps the wall clock
    if customer is not None:
        sale["customer"] = {"customer_id": customer}
    return Entry.of(validate(json.dumps(sale).encode(), max_bytes=1 << 20).txn)


def filed_columns(path: Path, seq: int) -> tuple[object, ...]:
    with sqlite3.connect(path) as db:
        return tuple(
            db.execute(f"SELECT {FILED_COLUMNS} FROM items WHERE seq = ?", (seq,)).fetchone()
        )


@pytest.mark.parametrize(
    ("column", "needle", "skip"),
    [
        # The record holds the columns in order: ...event type, lane, dependencies, payload.
        ("lane", b"sale.v1lane-7", 12),  # lane-7 -> lane-6: labelled as another lane's
        ("depends_on", b'["customer:C-77"]', 16),  # ] -> \: no longer JSON, the plan failed
    ],
)
async def test_a_column_damaged_on_disk_is_restored_from_the_payload_before_sending(
    tmp_path: Path, column: str, needle: bytes, skip: int
) -> None:
    """A bit flipped in a column the payload determines, not in the payload: every page is
    valid and no index holds the column, so neither check at open sees it. The sender's
    plan still reads the item, the read of its payload finds the column otherwise than the
    payload says, restores it (audited) and leaves the item out of that batch; the next read
    sends it as it was accepted."""
    path = tmp_path / "outbox.db"
    store = OutboxStore(path)
    await store.open()
    first = await store.append(sale_entry(1, "lane-7", customer="C-77"), now=T0)
    second = await store.append(sale_entry(2, "lane-8"), now=T0)
    await store.close()
    accepted = filed_columns(path, first.seq)
    flip_first_bit_of(path, needle, skip=skip)
    damaged = filed_columns(path, first.seq)
    store = OutboxStore(path)
    await store.open()
    try:
        planned = [item.key for item in await store.due(T0 + 1, 10)]
        read = await store.payloads([first.seq, second.seq], now=T0 + 1)
        restored = filed_columns(path, first.seq)
        audit = await store.audit_log(str(accepted[0]))
        again = await store.payloads([first.seq, second.seq], now=T0 + 2)
    finally:
        await store.close()
    changed = [
        name
        for name, a, b in zip(FILED_COLUMNS.split(", "), accepted, damaged, strict=True)
        if a != b
    ]
    assert changed == [column], "the premise: only that column reads otherwise"
    assert planned == [accepted[0], sale_entry(2, "lane-8").key], "the plan reads it"
    assert set(read) == {second.seq}, "left out of the batch, not parked"
    assert restored == accepted
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [
        ("repair", "hub", f"{column} restored from the payload")
    ]
    assert again == {first.seq: sale_entry(1, "lane-7", customer="C-77").payload,
                     second.seq: sale_entry(2, "lane-8").payload}  # fmt: skip
