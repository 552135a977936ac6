"""Reconciliation and the daily journal, pure: what the store expects, each kind of difference,
and a journal balanced to the cent for any day of sales, returns and exchanges."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.outbox.transactions import Transaction, decode_transaction
from edge.sim.registers import make_sale
from edge.uplink.netsuite.mapping import (
    JournalAccounts,
    Mapping,
    Preflight,
    decimal_of,
    external_id,
)
from edge.uplink.netsuite.reconcile import (
    Expected,
    Held,
    StoreTxn,
    compare,
    daily_inventory_adjustment,
    daily_journal,
    day_query,
    expected_records,
    ids_queries,
    journal_external_id,
    store_day,
)

DATA = Path(__file__).parents[1] / "outbox" / "data"
DAY = dt.date(2026, 5, 1)
ACCOUNTS = JournalAccounts(
    revenue="400", tax="220", discounts="410", tenders={"cash": "100", "card": "101"}
)
MAPPING = Mapping(
    subsidiary_id="1",
    default_location_id="1",
    walk_in_customer_id="7",
    items={"012345678905": "11", "4006381333931": "12", "SKU-MUG": "13"},
    discount_item_id="90",
    payment_methods={"cash": "1", "card": "2", "store_credit": "4"},
    journal_accounts=ACCOUNTS,
    netsuite_total_includes_tax=False,
)


def txn(name: str, **changes: Any) -> Transaction:
    document = json.loads((DATA / f"{name}.json").read_text()) | changes
    return decode_transaction(json.dumps(document).encode())


def held(eid: str | None, type_code: str, amount: str, day: dt.date = DAY, n: int = 1) -> Held:
    return Held(str(n), eid, type_code, Decimal(amount), day.isoformat())


def test_the_store_expects_the_records_the_connector_posts() -> None:
    sale, refund = txn("sale_cash"), txn("return_with_receipt")
    expected, refused = expected_records(
        [StoreTxn(sale, "delivered"), StoreTxn(refund, "delivered")], MAPPING
    )
    assert refused == []
    # Lines less discounts: 6.98 + 5.91 - 0.59; the refund's one line.
    assert [(e.record_type, e.external_id, e.amount) for e in expected] == [
        ("cashSale", external_id(sale.txn_id), Decimal("12.30")),
        ("cashRefund", external_id(refund.txn_id), Decimal("3.49")),
    ]
    with_tax = msgspec.structs.replace(MAPPING, netsuite_total_includes_tax=True)
    assert expected_records([StoreTxn(sale, "delivered")], with_tax)[0][0].amount == Decimal(
        "13.32"
    ), "NetSuite's total with the register's tax"


def test_an_exchanges_records_each_carry_the_tax_of_their_own_lines() -> None:
    """The refund side (and its return authorization) carries the returned lines' tax, the
    sale side the sold lines' tax, whatever the transaction id looks like once sanitised."""
    exchange = txn("exchange_refund")  # upper-case id: its external ids are hashed
    mapping = msgspec.structs.replace(
        MAPPING,
        netsuite_total_includes_tax=True,
        return_authorization=True,
        items=MAPPING.items | {"SHIRT-L": "21", "SHIRT-M": "22"},
    )
    expected, _ = expected_records([StoreTxn(exchange, "delivered")], mapping)
    assert [(e.record_type, e.amount) for e in expected] == [
        ("returnAuthorization", Decimal("24.99") + Decimal("2.06")),
        ("cashRefund", Decimal("24.99") + Decimal("2.06")),
        ("cashSale", Decimal("19.99") + Decimal("1.65")),
    ]


def test_a_transaction_the_mapping_refuses_is_missing_with_its_reason() -> None:
    void = txn("void_post")
    expected, refused = expected_records([StoreTxn(void, "parked", "NS_VOID_MANUAL")], MAPPING)
    assert expected == []
    assert [(d.kind, d.txn_id) for d in refused] == [("missing", void.txn_id)]
    assert "NS_VOID_MANUAL" in refused[0].detail


def test_each_kind_of_difference() -> None:
    expected = [
        Expected("a", "cashSale", "A", Decimal("10.00")),
        Expected("b", "cashSale", "B", Decimal("5.00")),
        Expected("c", "cashSale", "C", Decimal("7.00")),
        Expected("d", "cashRefund", "D", Decimal("3.00")),
        Expected("e", "cashSale", "E", Decimal("1.00")),
        Expected("f", "cashSale", "F", Decimal("2.00")),
        Expected("g", "cashSale", "G", Decimal("4.00")),
    ]
    rows = [
        held("a", "CashSale", "10.00", n=1),  # external ids compare without case, like NetSuite
        held("B", "CashSale", "5.01", n=2),
        held("D", "CashSale", "3.00", n=4),
        held("E", "CashSale", "1.00", DAY - dt.timedelta(days=1), n=5),
        held("F", "CashSale", "2.00", n=6),
        held("F", "CustInvc", "2.00", n=7),
        held("X", "CashSale", "9.99", n=8),
        held("G", "CashSale", "4.00", n=9),
        held("G", "CashSale", "4.00", n=9),  # the same row from both queries counts once
        held("Y", "CashSale", "9.99", DAY + dt.timedelta(days=1), n=10),  # another day's
    ]
    differences = compare(expected, rows, DAY, reasons={"c": "outbox: parked: NS_UNMAPPED_ITEMS"})
    found = {(d.kind, d.external_id) for d in differences}
    assert found == {
        ("amount", "B"),
        ("missing", "C"),
        ("type", "D"),
        ("date", "E"),
        ("duplicate", "F"),
        ("extra", "X"),
    }
    missing = next(d for d in differences if d.kind == "missing")
    assert "NS_UNMAPPED_ITEMS" in missing.detail
    amount = next(d for d in differences if d.kind == "amount")
    assert "+0.01" in amount.detail
    assert compare(expected[:1], rows[:1], DAY) == []


def test_queries_quote_what_they_name() -> None:
    assert "LIKE 'Store O''Hara /%'" in day_query("O'Hara", DAY)
    assert "TO_DATE('2026-05-01', 'YYYY-MM-DD')" in day_query("s1", DAY)
    queries = ids_queries([f"id-{n}" for n in range(450)], chunk=200)
    assert len(queries) == 3
    assert "'id-449'" in queries[-1]


def test_a_day_sums_sales_minus_returns_plus_exchanges() -> None:
    day = store_day(
        [
            txn("sale_cash"),
            txn("return_with_receipt"),
            txn("exchange_refund"),
            txn("no_sale"),
        ]
    )
    assert day.transactions == {"sale": 1, "return": 1, "exchange": 1, "no_sale": 1}
    # The exchange paid the customer 5.41 (its totals are negative, its cash tender positive).
    assert day.tax == Decimal("1.02") - Decimal("0.29") - Decimal("0.41")
    assert day.total == Decimal("13.32") - Decimal("3.78") - Decimal("5.41")
    assert day.tenders["cash"] == day.total, "all three were cash"


def test_the_daily_journal_needs_its_accounts() -> None:
    bare = msgspec.structs.replace(MAPPING, journal_accounts=JournalAccounts(revenue="400"))
    with pytest.raises(Preflight) as refused:
        daily_journal("s1", DAY, store_day([txn("sale_cash")]), bare)
    assert refused.value.code == "NS_UNMAPPED_ACCOUNTS"
    assert refused.value.detail["missing"] == ["tenders.cash", "discounts", "tax"]


def test_the_daily_inventory_adjustment_is_units_returned_minus_units_sold() -> None:
    mapping = msgspec.structs.replace(
        MAPPING,
        inventory_adjustments=True,
        inventory_account_id="300",
        items=MAPPING.items | {"SHIRT-L": "21"},
    )
    day = [txn("sale_cash"), txn("sale_cash"), txn("return_with_receipt"), txn("exchange_refund")]
    body = daily_inventory_adjustment("s1", DAY, [*day, txn("no_sale")], mapping)
    assert body is not None
    assert body["externalId"] == "inv-s1-20260501"
    assert body["account"] == {"id": "300"}
    assert body["adjLocation"] == {"id": "1"}
    assert body["tranDate"] == "2026-05-01"
    moved = [
        (line["item"]["id"], decimal_of(line["adjustQtyBy"]), line["location"]["id"])
        for line in body["inventory"]["items"]
    ]
    # Two sales of 2 oat bars and 0.455 kg of gouda, one oat bar back, a shirt L back.
    assert moved == [("11", Decimal(-3), "1"), ("12", Decimal("-0.910"), "1"), ("21", 1, "1")]
    assert "not adjusted (no NetSuite item): SHIRT-M" in body["memo"]
    assert daily_inventory_adjustment("s1", DAY, [txn("no_sale")], mapping) is None
    with pytest.raises(Preflight) as refused:
        daily_inventory_adjustment("s1", DAY, day, MAPPING)
    assert refused.value.detail["missing"] == ["inventory_account_id"]


def test_an_inventory_adjustment_is_expected_but_its_total_not_compared() -> None:
    eid = "inv-s1-20260501"
    stock = Expected("(daily stock)", "inventoryAdjustment", eid, None)
    assert compare([stock], [held(eid, "InvAdjst", "812.40")], DAY) == []
    (missing,) = compare([stock], [], DAY)
    assert (missing.kind, missing.expected) == ("missing", "inventoryAdjustment")


def _sum(body: dict[str, Any], side: str) -> Decimal:
    return sum((decimal_of(ln[side]) for ln in body["line"]["items"] if side in ln), Decimal(0))


@settings(max_examples=60, deadline=None)
@given(
    seeds=st.lists(st.integers(0, 10**6), min_size=1, max_size=25),
    returned=st.lists(st.booleans(), min_size=25, max_size=25),
)
def test_the_daily_journal_balances_to_the_cent(seeds: list[int], returned: list[bool]) -> None:
    """Any mix of sales and returns (a return refunds what a sale took): debits equal credits,
    tenders are debited net of change, no line is negative, and it names the store's day."""
    txns: list[Transaction] = []
    for n, (seed, is_return) in enumerate(zip(seeds, returned, strict=False)):
        document = make_sale(store_id="s1", lane_id="l1", number=n, rng=random.Random(seed))
        if is_return:
            document |= {"kind": "return", "reason": "changed mind"}
            for tender in document["tenders"]:
                tender["amount"] = document["totals"]["total"]
                tender.pop("change", None)
            document["totals"] |= {"tendered": document["totals"]["total"], "change": "0.00"}
        txns.append(decode_transaction(json.dumps(document).encode()))
    figures = store_day(txns)
    body = daily_journal("s1", DAY, figures, MAPPING)
    debits, credits = _sum(body, "debit"), _sum(body, "credit")
    assert debits == credits
    assert all(decimal_of(ln.get("debit", ln.get("credit"))) > 0 for ln in body["line"]["items"])
    assert body["externalId"] == journal_external_id("s1", DAY) == "je-s1-20260501"
    assert body["tranDate"] == "2026-05-01"
    taken = sum(
        (t.amount - t.change) * (-1 if x.kind == "return" else 1)
        for x in txns
        for t in x.tenders  # type: ignore[union-attr]
    )
    assert sum(figures.tenders.values()) == taken
