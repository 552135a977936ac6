"""The shell around :mod:`edge.uplink.netsuite.reconcile`: read the store's day from the outbox,
ask NetSuite, compare; build and post the daily journal.

Used by ``edge reconcile`` and ``edge netsuite journal`` (edge/netsuite_cli.py), which open the
outbox file next to a running hub (SQLite WAL: readers never block the hub's writer) and talk
to NetSuite with the hub's own settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from edge.outbox.store import OutboxStore
from edge.outbox.transactions import decode_transaction
from edge.uplink.netsuite.connector import NetSuiteConnector
from edge.uplink.netsuite.mapping import Mapping, decimal_of
from edge.uplink.netsuite.reconcile import (
    ZERO,
    Difference,
    Expected,
    Held,
    Reconciliation,
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

#: Transactions of a register date are looked for among items accepted from two days before
#: to three days after it: time zones, and a register that was off or offline for a while.
SEARCH_BEFORE = dt.timedelta(days=2)
SEARCH_AFTER = dt.timedelta(days=3)


async def day_transactions(store: OutboxStore, day: dt.date) -> list[StoreTxn]:
    """The store's transactions whose register date is ``day``, with their outbox status."""
    midnight = dt.datetime.combine(day, dt.time(), dt.UTC)
    items = await store.accepted_between(
        (midnight - SEARCH_BEFORE).timestamp(), (midnight + SEARCH_AFTER).timestamp()
    )
    found: list[StoreTxn] = []
    for item in items:
        if item.kind == "customer":
            continue
        txn = decode_transaction(item.payload)
        if txn.register_time.date() == day:
            reason = item.last_error if item.status != "delivered" else None
            found.append(StoreTxn(txn, item.status, reason))
    return found


async def reconcile_day(
    store: OutboxStore,
    connector: NetSuiteConnector,
    mapping: Mapping,
    store_id: str,
    day: dt.date,
) -> Reconciliation:
    txns = await day_transactions(store, day)
    figures = store_day(t.txn for t in txns)
    if mapping.posting == "daily_journal":
        expected = []
        if not figures.is_empty:
            body = daily_journal(store_id, day, figures, mapping)
            expected.append(
                Expected("(daily journal)", "journalEntry", body["externalId"], _debits(body))
            )
        stock = adjustment_for_day(txns, mapping, store_id, day)
        if stock is not None:
            expected.append(
                Expected("(daily stock)", "inventoryAdjustment", stock["externalId"], None)
            )
        refused: list[Difference] = []
    else:
        expected, refused = expected_records(txns, mapping)
    rows = await connector.suiteql(day_query(store_id, day))
    for query in ids_queries([e.external_id for e in expected]):
        rows += await connector.suiteql(query)
    held = [Held.from_row(row) for row in rows]
    reasons = {
        t.txn.txn_id: f"outbox: {t.status}" + (f": {t.reason}" if t.reason else "")
        for t in txns
        if t.status != "delivered"
    }
    differences = refused + compare(expected, held, day, reasons=reasons)
    return Reconciliation(
        store_id=store_id,
        day=day,
        figures=figures,
        expected=len(expected),
        held=len({h.internal_id for h in held if h.tran_date == day.isoformat()}),
        differences=differences,
    )


def _debits(body: dict[str, Any]) -> Decimal:
    return sum(
        (decimal_of(line["debit"]) for line in body["line"]["items"] if "debit" in line), ZERO
    )


async def journal_for_day(
    store: OutboxStore, mapping: Mapping, store_id: str, day: dt.date
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The day's journalEntry body (None when the day has no sales, returns or exchanges) and
    its inventoryAdjustment body (see :func:`adjustment_for_day`)."""
    txns = await day_transactions(store, day)
    figures = store_day(t.txn for t in txns)
    journal = None if figures.is_empty else daily_journal(store_id, day, figures, mapping)
    return journal, adjustment_for_day(txns, mapping, store_id, day)


def adjustment_for_day(
    txns: Sequence[StoreTxn], mapping: Mapping, store_id: str, day: dt.date
) -> dict[str, Any] | None:
    """The day's inventoryAdjustment body, or None (not configured, or no stock moved)."""
    if not mapping.inventory_adjustments:
        return None
    return daily_inventory_adjustment(store_id, day, (t.txn for t in txns), mapping)


async def post_journal(connector: NetSuiteConnector, body: dict[str, Any]) -> str:
    """Upsert the journal (PUT by its external id: posting a day twice updates it)."""
    return await connector.upsert("journalEntry", body["externalId"], body)


async def post_adjustment(connector: NetSuiteConnector, body: dict[str, Any]) -> str:
    """Upsert the day's inventory adjustment (posting a day twice updates it)."""
    return await connector.upsert("inventoryAdjustment", body["externalId"], body)


__all__: Sequence[str] = (
    "adjustment_for_day",
    "day_transactions",
    "journal_external_id",
    "journal_for_day",
    "post_adjustment",
    "post_journal",
    "reconcile_day",
)
