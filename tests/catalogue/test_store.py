"""The catalogue file: loads, deltas, sequences, tombstones, quarantine, custom-field hygiene,
the change feed and snapshots, and readers during a load. Real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from edge.catalogue.errors import DeltaQuarantined, InvalidCursor
from edge.catalogue.feed import Cursor, Record
from edge.catalogue.model import (
    Deletions,
    Delta,
    Item,
    PercentOff,
    PriceRef,
    encode,
)
from edge.catalogue.pricing import BasketLine, price_basket
from edge.catalogue.store import CatalogueStore
from tests.catalogue.builders import (
    AT,
    DAY,
    RED,
    STD,
    T0,
    delta,
    field,
    item,
    price,
    wire,
)
from tests.catalogue.conftest import Replica, current_records


def base() -> Delta:
    """11 records: sequences 1-11 in dependency order."""
    return delta(
        "base",
        custom_fields=[field("color"), field("origin")],
        tax_codes=[STD, RED],
        items=[
            item("A", barcodes=["1001"], custom={"color": "red", "origin": "FR"}),
            item("B", barcodes=["1002", "1003"], custom={"color": "blue"}),
            item("C", tax_code="RED"),
        ],
        prices=[price("A", "1.99"), price("B", "3.00"), price("C", "0.99")],
        promotions=[PercentOff(promotion_id="P10", skus=["B"], percent=Decimal(10))],
    )


BASE_KEYS = [
    ("custom_field", "color"),
    ("custom_field", "origin"),
    ("tax_code", "STD"),
    ("tax_code", "RED"),
    ("item", "A"),
    ("item", "B"),
    ("item", "C"),
    ("price", "A|base|"),
    ("price", "B|base|"),
    ("price", "C|base|"),
    ("promotion", "P10"),
]


async def loaded(store: CatalogueStore) -> int:
    applied = await store.load_full([wire(base())], now=T0)
    assert applied.version == 11
    return applied.version


async def all_changes(store: CatalogueStore, since: int, limit: int = 5000) -> list[Record]:
    cursor = Cursor(store.epoch, since)
    records: list[Record] = []
    while True:
        page = await store.changes_since(cursor, limit=limit)
        records.extend(page.records)
        cursor = Cursor.parse(page.next_cursor)
        if not page.more:
            return records


def summary(records: list[Record]) -> list[tuple[int, str, str, str]]:
    return [(r.seq, r.entity, r.key, r.op) for r in records]


def seq_of(records: list[Record], entity: str, key: str) -> int:
    return next(r.seq for r in records if (r.entity, r.key) == (entity, key))


# --------------------------------------------------------------------------------------------
# Loads and deltas.


async def test_full_load_serves_lookups_and_feeds_every_record_once_in_dependency_order(
    store: CatalogueStore,
) -> None:
    applied = await store.load_full([wire(base())], now=T0)
    assert (applied.version, applied.changes, applied.stripped) == (11, 11, 0)

    found = await store.item_by_barcode("1003")
    assert found is not None
    assert found.sku == "B"
    c = await store.item_by_sku("C")
    assert c is not None
    assert c.tax_code == "RED"
    assert [p.amount for p in await store.prices_for("A")] == [Decimal("1.99")]
    assert [p.promotion_id for p in await store.promotions_for("B")] == ["P10"]
    assert await store.promotions_for("A") == []
    assert await store.item_by_barcode("9999") is None
    assert [t.code for t in await store.tax_codes()] == ["RED", "STD"]
    assert [f.name for f in await store.custom_fields()] == ["color", "origin"]

    page = await store.changes_since(Cursor(store.epoch, 0))
    assert [(r.entity, r.key) for r in page.records] == BASE_KEYS
    assert [r.seq for r in page.records] == list(range(1, 12))
    assert page.records[4].data is not None
    assert bytes(page.records[4].data) == encode(base().items[0])  # the bytes the hub validated
    assert (page.next_cursor, page.more) == (f"{store.epoch}:11", False)

    stats = await store.stats()
    assert (stats.items, stats.prices, stats.promotions, stats.tombstones) == (3, 3, 1, 0)
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_incremental_delta_takes_new_sequences_for_what_it_changes_only(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    applied = await store.apply_delta(
        wire(
            delta(
                "d1",
                items=[item("D", barcodes=["1004"])],
                prices=[price("A", "2.49"), price("D", "5.00")],
            )
        ),
        now=T0 + 60,
    )
    assert (applied.version, applied.changes) == (14, 3)
    assert summary(await all_changes(store, 11)) == [
        (12, "item", "D", "upsert"),
        (13, "price", "A|base|", "upsert"),
        (14, "price", "D|base|", "upsert"),
    ]
    assert [p.amount for p in await store.prices_for("A")] == [Decimal("2.49")]
    d = await store.item_by_barcode("1004")
    assert d is not None
    assert d.sku == "D"
    assert await store.version() == 14


async def test_unchanged_records_take_no_new_sequence(store: CatalogueStore) -> None:
    """Re-sending a catalogue must not wake every register: the same bytes, the same seq."""
    await loaded(store)
    again = await store.apply_delta(
        delta("again", items=[base().items[0]], prices=[price("A", "1.99")]), now=T0 + 1
    )
    assert (again.version, again.changes) == (11, 0)
    reload = await store.load_full([wire(base())], now=T0 + 2)
    assert (reload.version, reload.changes) == (11, 0)
    page = await store.changes_since(Cursor(store.epoch, 11))
    assert (page.records, page.more, page.next_cursor) == ([], False, f"{store.epoch}:11")

    renamed = await store.apply_delta(
        delta(
            "rename",
            items=[
                item("B", name="Blue thing", barcodes=["1002", "1003"], custom={"color": "blue"})
            ],
        ),
        now=T0 + 3,
    )
    assert (renamed.version, renamed.changes) == (12, 1)
    records = await all_changes(store, 0)
    assert seq_of(records, "item", "B") == 12
    assert seq_of(records, "item", "A") == 5


async def test_full_load_replaces_the_catalogue_and_tombstones_what_it_omits(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    smaller = delta(
        "full-2",
        custom_fields=[field("color"), field("origin")],
        tax_codes=[STD, RED],
        items=[base().items[0], base().items[1]],
        prices=[price("A", "1.99"), price("B", "3.20")],
        promotions=base().promotions,
    )
    applied = await store.load_full([wire(smaller)], now=T0 + 10)
    # B's price changed; C's price and C itself are gone.
    assert summary(await all_changes(store, 11)) == [
        (12, "price", "B|base|", "upsert"),
        (13, "price", "C|base|", "delete"),
        (14, "item", "C", "delete"),
    ]
    assert applied.changes == 3
    assert await store.item_by_sku("C") is None
    a = await store.item_by_barcode("1001")  # barcodes rebuilt from the load
    assert a is not None
    assert a.sku == "A"


async def test_a_full_load_in_parts_is_applied_whole_or_not_at_all(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    part1 = delta("p1", tax_codes=[STD, RED], items=[item("X1")], prices=[price("X1", "1.00")])
    part2 = delta("p2", items=[item("X2")], prices=[price("MISSING", "1.00")])
    with pytest.raises(DeltaQuarantined, match="MISSING"):
        await store.load_full([wire(part1), wire(part2)], now=T0 + 5)
    assert await store.item_by_sku("X1") is None
    assert await store.item_by_sku("A") is not None
    assert await store.version() == 11


async def test_an_item_in_two_parts_of_a_full_load_is_refused(store: CatalogueStore) -> None:
    await loaded(store)
    part1 = delta("p1", tax_codes=[STD, RED], items=[item("A", barcodes=["1001"])])
    part2 = delta("p2", items=[item("A", barcodes=["1001"])])
    with pytest.raises(DeltaQuarantined, match="two parts"):
        await store.load_full([wire(part1), wire(part2)], now=T0 + 5)
    assert await store.version() == 11


# --------------------------------------------------------------------------------------------
# Deletions, tombstones, pruning.


async def test_deleting_an_item_tombstones_it_and_its_prices_and_frees_its_barcodes(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    applied = await store.apply_delta(delta("del", deleted=Deletions(items=["A"])), now=T0 + 60)
    assert applied.changes == 2
    records = await all_changes(store, 11)
    assert summary(records) == [(12, "price", "A|base|", "delete"), (13, "item", "A", "delete")]
    assert all(r.data is None for r in records)
    assert await store.item_by_sku("A") is None
    assert await store.item_by_barcode("1001") is None
    assert await store.prices_for("A") == []
    assert (await store.stats()).tombstones == 2

    # The barcode is free for another item.
    await store.apply_delta(delta("reuse", items=[item("E", barcodes=["1001"])]), now=T0 + 61)
    e = await store.item_by_barcode("1001")
    assert e is not None
    assert e.sku == "E"

    # A re-created key replaces its tombstone: the feed holds each key once.
    await store.apply_delta(delta("back", items=[item("A")]), now=T0 + 62)
    records = await all_changes(store, 11)
    assert [(r.entity, r.key, r.op) for r in records if r.key == "A"] == [("item", "A", "upsert")]


async def test_deleting_a_price_by_reference_and_an_unknown_key_is_harmless(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    applied = await store.apply_delta(
        delta("del", deleted=Deletions(prices=[PriceRef(sku="C")], promotions=["NOPE"])),
        now=T0,
    )
    assert applied.changes == 1  # the unknown promotion leaves no tombstone
    assert summary(await all_changes(store, 11)) == [(12, "price", "C|base|", "delete")]


async def test_prune_drops_old_tombstones_and_moves_the_oldest_cursor(
    store: CatalogueStore,
) -> None:
    """Retention is 30 days here. A register behind a pruned tombstone could miss a deletion,
    so it must be sent a snapshot, never a delta."""
    await loaded(store)
    await store.apply_delta(
        delta("d1", deleted=Deletions(prices=[PriceRef(sku="C")])), now=T0
    )  # seq 12
    await store.apply_delta(
        delta("d2", deleted=Deletions(prices=[PriceRef(sku="A")])), now=T0 + 20 * DAY
    )  # seq 13
    assert await store.oldest_cursor_available() == 0

    # An active register at 12 still needs tombstone 13 (and 12 is past the retention).
    assert await store.prune_tombstones(now=T0 + 60 * DAY, keep_after=11) == 0
    assert await store.prune_tombstones(now=T0 + 40 * DAY, keep_after=12) == 1
    assert await store.oldest_cursor_available() == 12
    assert await store.prune_tombstones(now=T0 + 40 * DAY) == 0  # 13 is within retention
    assert (await store.stats()).tombstones == 1

    with pytest.raises(InvalidCursor, match="older than the oldest available"):
        await store.changes_since(Cursor(store.epoch, 11))
    stale = await store.plan_feed(Cursor(store.epoch, 11))
    assert (stale.mode, stale.reason) == ("snapshot", "stale")
    page = await store.changes_since(Cursor(store.epoch, 12))
    assert summary(page.records) == [(13, "price", "A|base|", "delete")]
    assert (await store.plan_feed(Cursor(store.epoch, 12))).mode == "delta"

    assert await store.prune_tombstones(now=T0 + 60 * DAY) == 1
    assert await store.oldest_cursor_available() == 13
    assert (await store.plan_feed(Cursor(store.epoch, 12))).reason == "stale"


# --------------------------------------------------------------------------------------------
# Bad input: quarantine, cross-record checks.


BAD_DELTAS = [
    pytest.param(b'{"delta_id": "t1", "items": [', "malformed delta", None, id="truncated"),
    pytest.param(
        b'{"delta_id": "t2", "prices": [{"sku": "A", "amount": "abc"}]}',
        "malformed delta",
        None,
        id="not-a-decimal",
    ),
    pytest.param(
        b'{"delta_id": "t3", "prices": [{"sku": "A", "amout": "1.00"}]}',
        "malformed delta",
        None,
        id="misspelt-field",
    ),
    pytest.param(
        wire(delta("t4", prices=[price("A", "-1.00")])), "must be at least 0", "t4", id="negative"
    ),
    pytest.param(
        wire(
            delta(
                "t5",
                promotions=[PercentOff(promotion_id="PX", skus=["A", "ZZZ"], percent=Decimal(5))],
            )
        ),
        "promotion 'PX' names SKU 'ZZZ', which is not in the catalogue",
        "t5",
        id="promotion-missing-sku",
    ),
    pytest.param(
        wire(delta("t6", prices=[price("ZZZ", "1.00")])),
        "names SKU 'ZZZ'",
        "t6",
        id="price-missing-item",
    ),
    pytest.param(
        wire(delta("t7", items=[item("N", tax_code="NOPE")])),
        "unknown tax code 'NOPE'",
        "t7",
        id="unknown-tax-code",
    ),
    pytest.param(
        wire(delta("t8", items=[item("N", barcodes=["1001"])])),
        "belongs to item 'A'",
        "t8",
        id="barcode-taken",
    ),
    pytest.param(
        wire(delta("t9", deleted=Deletions(items=["B"]))),
        "promotion 'P10' still names it",
        "t9",
        id="delete-item-named-by-promotion",
    ),
    pytest.param(
        wire(delta("t10", deleted=Deletions(tax_codes=["STD"]))),
        "item 'A' uses it",
        "t10",
        id="delete-tax-code-in-use",
    ),
]


@pytest.mark.parametrize(("payload", "reason", "delta_id"), BAD_DELTAS)
async def test_a_bad_delta_is_quarantined_with_its_reason_and_the_catalogue_stays(
    store: CatalogueStore, payload: bytes, reason: str, delta_id: str | None
) -> None:
    await loaded(store)
    before = await current_records(store)
    with pytest.raises(DeltaQuarantined) as caught:
        await store.apply_delta(payload, now=T0 + 5, source="hq")
    assert reason in caught.value.reason
    assert caught.value.delta_id == delta_id
    [kept] = await store.quarantined()
    assert (kept.id, kept.reason, kept.delta_id, kept.source, kept.at) == (
        caught.value.quarantine_id,
        caught.value.reason,
        delta_id,
        "hq",
        T0 + 5,
    )
    assert await store.quarantined_payload(kept.id) == payload
    assert await store.version() == 11
    assert await current_records(store) == before
    assert (await store.stats()).quarantined == 1
    # The store still takes good deltas afterwards.
    assert (await store.apply_delta(delta("ok", prices=[price("A", "2.00")]), now=T0)).version == 12


async def test_a_cross_record_failure_rolls_back_the_whole_delta(store: CatalogueStore) -> None:
    """The new item, its price and A's new price were written before the promotion was found
    to name a missing SKU: none of them may stay."""
    await loaded(store)
    bad = delta(
        "half",
        items=[item("D", barcodes=["2001"])],
        prices=[price("D", "4.00"), price("A", "9.99")],
        promotions=[PercentOff(promotion_id="PD", skus=["D", "GHOST"], percent=Decimal(5))],
        deleted=Deletions(prices=[PriceRef(sku="C")]),
    )
    with pytest.raises(DeltaQuarantined, match="GHOST"):
        await store.apply_delta(bad, now=T0)
    assert await store.item_by_sku("D") is None
    assert await store.item_by_barcode("2001") is None
    assert [p.amount for p in await store.prices_for("A")] == [Decimal("1.99")]
    assert len(await store.prices_for("C")) == 1
    assert await store.version() == 11
    assert (await store.changes_since(Cursor(store.epoch, 11))).records == []
    assert (await store.stats()).tombstones == 0


# --------------------------------------------------------------------------------------------
# Custom-field hygiene (seed 000).


async def test_a_custom_field_removed_upstream_leaves_every_item_and_reaches_the_register(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    register = Replica()
    assert await register.sync(store) == "snapshot"
    a_before = msgspec.json.decode(register.records[("item", "A")], type=Item)
    assert a_before.custom == {"color": "red", "origin": "FR"}

    applied = await store.apply_delta(
        delta("drop-origin", deleted=Deletions(custom_fields=["origin"])), now=T0 + 60
    )
    # The field's tombstone and a new sequence for the one item that carried it.
    assert summary(await all_changes(store, 11)) == [
        (12, "custom_field", "origin", "delete"),
        (13, "item", "A", "upsert"),
    ]
    assert applied.changes == 2
    a = await store.item_by_sku("A")
    assert a is not None
    assert a.custom == {"color": "red"}

    assert await register.sync(store) == "delta"
    assert ("custom_field", "origin") not in register.records
    a_on_lane = msgspec.json.decode(register.records[("item", "A")], type=Item)
    assert a_on_lane.custom == {"color": "red"}
    assert register.records == await current_records(store)

    # A value under a name no longer configured is dropped on the way in.
    resent = await store.apply_delta(
        delta(
            "resend",
            items=[item("A", barcodes=["1001"], custom={"color": "green", "origin": "IT"})],
        ),
        now=T0 + 120,
    )
    assert resent.stripped == 1
    a = await store.item_by_sku("A")
    assert a is not None
    assert a.custom == {"color": "green"}


async def test_a_full_load_without_a_field_strips_it_from_every_item(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    without_color = msgspec.structs.replace(base(), custom_fields=[field("origin")])
    applied = await store.load_full([wire(without_color)], now=T0 + 10)
    assert applied.stripped == 2
    records = await all_changes(store, 11)
    assert {(r.entity, r.key, r.op) for r in records} == {
        ("item", "A", "upsert"),
        ("item", "B", "upsert"),
        ("custom_field", "color", "delete"),
    }
    for sku in ("A", "B", "C"):
        found = await store.item_by_sku(sku)
        assert found is not None
        assert "color" not in found.custom


# --------------------------------------------------------------------------------------------
# The change feed and snapshots.


async def test_changes_since_gives_each_key_once_with_its_latest_state_across_pages(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    for n, amount in enumerate(("2.01", "2.02", "2.03")):
        await store.apply_delta(delta(f"a{n}", prices=[price("A", amount)]), now=T0 + n)
    assert await store.version() == 14

    cursor = Cursor(store.epoch, 0)
    pages = []
    while True:
        page = await store.changes_since(cursor, limit=4)
        pages.append(page)
        assert len(page.records) <= 4
        assert all(r.seq > cursor.seq for r in page.records)
        cursor = Cursor.parse(page.next_cursor)
        if not page.more:
            break
    assert [p.more for p in pages] == [True, True, False]
    assert cursor == Cursor(store.epoch, 14)
    records = [r for p in pages for r in p.records]
    keys = [(r.entity, r.key) for r in records]
    assert len(keys) == len(set(keys)) == 11
    [a_price] = [r for r in records if r.key == "A|base|"]
    assert a_price.seq == 14
    assert a_price.data is not None
    assert msgspec.json.decode(bytes(a_price.data))["amount"] == "2.03"
    assert [r.seq for r in records] == sorted(r.seq for r in records)


async def test_cursors_the_store_cannot_serve_are_refused_with_the_reason(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    other = Cursor("0" * 32, 3)
    with pytest.raises(InvalidCursor, match="another catalogue"):
        await store.changes_since(other)
    with pytest.raises(InvalidCursor, match="ahead"):
        await store.changes_since(Cursor(store.epoch, 12))
    assert (await store.plan_feed(other)).reason == "other_catalogue"
    assert (await store.plan_feed(Cursor(store.epoch, 12))).reason == "cursor_ahead"
    assert (await store.plan_feed(None)).reason == "no_cursor"
    assert (await store.plan_feed(Cursor(store.epoch, 11))).mode == "current"


async def test_plan_feed_sends_a_snapshot_when_the_delta_would_be_larger(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    recent = Replica()
    assert await recent.sync(store) == "snapshot"  # no cursor yet
    assert recent.cursor == Cursor(store.epoch, 11)
    long_off = Replica()
    long_off.cursor = Cursor(store.epoch, 0)  # a register that kept nothing useful

    await store.apply_delta(delta("p", prices=[price("A", "2.00")]), now=T0)
    await store.apply_delta(
        delta("del", deleted=Deletions(items=["C"])), now=T0
    )  # 9 live records; since 0: 9 upserts + 2 tombstones
    assert (await store.plan_feed(recent.cursor)).mode == "delta"
    far = await store.plan_feed(long_off.cursor)
    assert (far.mode, far.reason) == ("snapshot", "delta_larger")

    # Either way the register ends up with exactly the hub's catalogue.
    assert await recent.sync(store, limit=2) == "delta"
    assert await long_off.sync(store, limit=2) == "snapshot"
    hub = await current_records(store)
    for register in (recent, long_off):
        assert register.cursor == Cursor(store.epoch, 14)
        assert register.records == hub
    assert await recent.sync(store) == "current"


async def test_a_snapshot_is_one_version_even_while_a_delta_lands_between_pages(
    store: CatalogueStore,
) -> None:
    await loaded(store)
    expected = await current_records(store)
    async with store.snapshot() as snap:
        assert snap.version == 11
        pages = snap.pages(page_size=4)
        first = await anext(pages)
        # Between page 0 and the rest: rename B, delete A, add D.
        applied = await store.apply_delta(
            delta(
                "during",
                items=[
                    item("B", name="Renamed", barcodes=["1002", "1003"], custom={"color": "blue"}),
                    item("D"),
                ],
                prices=[price("D", "1.00")],
                deleted=Deletions(items=["A"]),
            ),
            now=T0 + 1,
        )
        assert applied.version > 11
        rest = [page async for page in pages]
    got = {(r.entity, r.key): bytes(r.data) for p in [first, *rest] for r in p.records}  # type: ignore[arg-type]
    assert {p.version for p in [first, *rest]} == {11}
    assert [p.number for p in [first, *rest]] == list(range(len(rest) + 1))
    assert rest[-1].last
    assert not any(p.last for p in [first, *rest[:-1]])
    assert got == expected

    after = await current_records(store)
    assert ("item", "A") not in after
    assert ("item", "D") in after


# --------------------------------------------------------------------------------------------
# Readers during a load.


async def test_lookups_are_served_from_the_last_version_while_a_load_is_half_written(
    store: CatalogueStore,
) -> None:
    """The load is held open after its first part is written (inside its transaction); every
    read must answer during that time, from the previous version. Nothing here waits on the
    clock: the loader cannot go on until the reads have answered."""
    await loaded(store)
    loop = asyncio.get_running_loop()
    first_part_written = asyncio.Event()
    release = threading.Event()
    released_in_time: list[bool] = []

    big = [item(f"N{n:05d}", barcodes=[f"9{n:05d}"]) for n in range(3000)]
    renamed_a = item("A", name="New A", barcodes=["1001"], custom={"color": "red"})

    def parts() -> Iterator[bytes]:  # consumed on the store's writer thread
        yield wire(
            msgspec.structs.replace(
                base(),
                delta_id="big-1",
                items=[renamed_a, *base().items[1:], *big[:1500]],
                prices=[*base().prices, *(price(i.sku, "1.00") for i in big[:1500])],
            )
        )
        loop.call_soon_threadsafe(first_part_written.set)
        # A safety net so a broken store fails the test instead of hanging it.
        released_in_time.append(release.wait(timeout=30))
        yield wire(
            delta(
                "big-2",
                items=big[1500:],
                prices=[price(i.sku, "1.00") for i in big[1500:]],
            )
        )

    load = asyncio.create_task(store.load_full(parts(), now=T0 + 100))
    try:
        await first_part_written.wait()
        a = await asyncio.wait_for(store.item_by_sku("A"), 10)
        assert a is not None
        assert a.name == "Item A"
        assert await asyncio.wait_for(store.item_by_barcode("900001"), 10) is None
        assert await asyncio.wait_for(store.version(), 10) == 11
        async with store.snapshot() as snap:
            assert snap.version == 11
        plan = await asyncio.wait_for(store.plan_feed(Cursor(store.epoch, 11)), 10)
        assert plan.mode == "current"
        assert not load.done()
    finally:
        release.set()
    applied = await load
    assert released_in_time == [True]
    assert applied.version == 11 + 1 + 3000 * 2  # A renamed, then every new item and price
    a = await store.item_by_sku("A")
    assert a is not None
    assert a.name == "New A"
    n = await store.item_by_barcode("902999")
    assert n is not None
    assert n.sku == "N02999"


async def test_the_catalogue_survives_a_reopen_with_its_epoch(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.db"
    first = CatalogueStore(path)
    await first.open()
    await first.load_full([wire(base())], now=T0)
    epoch = first.epoch
    await first.close()
    again = CatalogueStore(path)
    await again.open()
    try:
        assert again.epoch == epoch
        assert await again.version() == 11
        assert (await again.plan_feed(Cursor(epoch, 11))).mode == "current"
    finally:
        await again.close()


async def test_pricing_view_and_upstream_cursor_come_from_one_version(
    store: CatalogueStore,
) -> None:
    """A basket priced from the store's view matches the same records held in memory, and
    the cloud's cursor is kept with the delta that carried it."""
    await loaded(store)
    await store.apply_delta(
        delta("up", upstream_cursor="cloud-42", prices=[price("A", "2.00")]), now=T0
    )
    assert await store.upstream_cursor() == "cloud-42"
    view = await store.pricing_view(["A", "B", "NOPE"])
    assert view.version == 12
    b = view.item("B")
    assert b is not None
    assert b.sku == "B"
    assert view.item("C") is None  # not asked for
    assert [p.promotion_id for p in view.promotions(["B"], AT)] == ["P10"]
    basket = [BasketLine(sku="A", quantity=Decimal(1)), BasketLine(sku="B", quantity=Decimal(2))]
    result = price_basket(view, basket, AT)
    assert (str(result.discount_total), str(result.total)) == ("0.60", "7.40")
    assert result.version == 12


async def test_unknown_skus_are_judged_only_once_the_store_holds_a_catalogue(
    tmp_path: Path,
) -> None:
    """The intake's UNKNOWN_SKU review flag. Before the first catalogue nothing is unknown
    (a flag on every line would hide the real ones); from the load on, what it lacks is, at
    once and after a reopen."""
    path = tmp_path / "catalogue.db"
    store = CatalogueStore(path)
    await store.open()
    try:
        assert store.unknown_skus({"A", "NOPE"}) == set()
        await loaded(store)
        assert store.unknown_skus({"A", "B", "NOPE", "GONE"}) == {"NOPE", "GONE"}
        assert store.unknown_skus(set()) == set()
    finally:
        await store.close()
    again = CatalogueStore(path)
    await again.open()
    try:
        assert again.unknown_skus(["C", "NOPE"]) == {"NOPE"}
    finally:
        await again.close()
