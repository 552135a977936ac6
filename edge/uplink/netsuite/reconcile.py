"""A store's business day against what NetSuite holds, and the daily summary journal: pure.

Theory of operation
-------------------
*Reconciliation* (``edge reconcile --date``) answers the month-end question "does finance see
what the tills rang up?" for one store and one business day, from two sources:

1. the store: every transaction in the hub's outbox whose register date is the day. The same
   :func:`~edge.uplink.netsuite.mapping.plan_postings` the connector uses says which NetSuite
   records each one should have produced (type, external id, amount). A transaction the
   mapping refuses, or that is parked or still pending, is *expected but unposted*: it shows as
   missing with the outbox's reason, since that is exactly what finance will miss;
2. NetSuite: the transactions SuiteQL finds for the store on that day (by the memo every record
   carries, ``Store <id> / ...``) and those holding the expected external ids on any date.

:func:`compare` lists every difference, each with a stable ``kind``:

=============  ==============================================================================
``missing``    expected, not in NetSuite (with the outbox status and reason when there is one)
``extra``      in NetSuite for the store's day, not rung up by any till (or not on this hub)
``amount``     both hold it, the totals differ
``date``       NetSuite holds it under another date
``type``       NetSuite holds the external id as another record type than the mapping gives
``duplicate``  NetSuite holds the external id more than once (two record types)
=============  ==============================================================================

A day with no difference is clean (the CLI exits 0; otherwise 1).

The amount compared is the record total NetSuite shows (``foreigntotal``): the line amounts the
hub sent, plus the register's tax when ``Mapping.netsuite_total_includes_tax`` (NetSuite adds
the tax it computes to a sale's total; whether the account's total includes it depends on its
tax setup, ref §0.7: UNCERTAIN, hence a setting). A payment's total is its amount.

*The daily inventory adjustment* (``inventory_adjustments``, journal mode only: a cash sale
moves stock itself) is the day's stock movement per mapped item, units returned minus units
sold, upserted as ``inventoryAdjustment`` ``inv-<store>-<YYYYMMDD>`` next to the journal; the
reconciliation expects it but does not compare its total.

*The daily journal* (``posting = "daily_journal"``, ref §8: a common accounting-integration
mode, not an Oracle POS pattern) replaces per-transaction records with one balanced
``journalEntry`` per store per day, external id ``je-<store>-<YYYYMMDD>``, upserted like every
record. :func:`store_day` sums the day's sales, returns and exchanges (signed: a refund
counts against the day) into revenue, tax, discounts and tenders by type (net of change);
:func:`daily_journal` turns that into lines: tenders and discounts debited, revenue and tax
credited; a negative figure moves to the other side. Debits equal credits to the cent by
construction (each transaction's tenders net of change equal its total, which the intake
checked), and :func:`daily_journal` asserts it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from edge.outbox.transactions import Exchange, Line, Return, Sale, Transaction
from edge.uplink.netsuite.auth import sanitize_external_id
from edge.uplink.netsuite.mapping import (
    Mapping,
    Plan,
    Preflight,
    decimal_of,
    json_number,
    line_quantity,
    plan_postings,
)

ZERO = Decimal(0)
CENT = Decimal("0.01")

#: NetSuite's ``transaction.type`` code of each record type the connector writes (ref §4.3).
TYPE_CODES: dict[str, str] = {
    "cashSale": "CashSale",
    "cashRefund": "CashRfnd",
    "creditMemo": "CustCred",
    "invoice": "CustInvc",
    "customerPayment": "CustPymt",
    "journalEntry": "Journal",
    "returnAuthorization": "RtnAuth",
    "inventoryAdjustment": "InvAdjst",
}

DifferenceKind = Literal["missing", "extra", "amount", "date", "type", "duplicate"]


# --------------------------------------------------------------------------------------------
# The store's side.


@dataclass(frozen=True, slots=True)
class StoreTxn:
    """One transaction of the day as the outbox holds it."""

    txn: Transaction
    status: str
    """Outbox status: pending, delivered, parked."""
    reason: str | None = None
    """Why it is parked or still pending (the outbox's last error)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """A record NetSuite should hold."""

    txn_id: str
    record_type: str
    external_id: str
    amount: Decimal | None
    """None: not compared (an inventory adjustment moves stock; what NetSuite shows as its
    total is UNCERTAIN)."""


@dataclass(frozen=True, slots=True)
class Held:
    """A transaction record NetSuite holds (one SuiteQL row)."""

    internal_id: str
    external_id: str | None
    type_code: str
    amount: Decimal
    tran_date: str

    @classmethod
    def from_row(cls, row: MappingABC[str, Any]) -> Held:
        """From a SuiteQL row of the queries in :func:`day_query`/:func:`ids_query`."""
        return cls(
            internal_id=str(row.get("id", "")),
            external_id=row.get("externalid"),
            type_code=str(row.get("type", "")),
            amount=Decimal(str(row.get("foreigntotal") or "0")),
            tran_date=str(row.get("trandate", "")),
        )


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DifferenceKind
    external_id: str
    txn_id: str | None
    detail: str
    expected: str | None = None
    held: str | None = None


@dataclass(slots=True)
class DayFigures:
    """One store's business day, summed (signed: refunds count against the day)."""

    transactions: Counter[str] = field(default_factory=Counter)
    """Count by kind (every kind, including no-sales and drawer events)."""
    revenue: Decimal = ZERO
    """Sales net of tax, before discounts."""
    discounts: Decimal = ZERO
    tax: Decimal = ZERO
    tenders: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    """Tender type -> amount taken, net of change."""

    @property
    def total(self) -> Decimal:
        return self.revenue - self.discounts + self.tax

    @property
    def is_empty(self) -> bool:
        """Nothing to journal: no amount at all (a day of no-sales, or no trading)."""
        return not (self.revenue or self.discounts or self.tax or any(self.tenders.values()))

    def as_json(self) -> dict[str, Any]:
        return {
            "transactions": dict(sorted(self.transactions.items())),
            "revenue": str(self.revenue),
            "discounts": str(self.discounts),
            "tax": str(self.tax),
            "total": str(self.total),
            "tenders": {k: str(v) for k, v in sorted(self.tenders.items())},
        }


def store_day(txns: Iterable[Transaction]) -> DayFigures:
    """Sum the day: sales add, returns subtract, an exchange adds its (signed) totals."""
    figures = DayFigures()
    for txn in txns:
        figures.transactions[txn.kind] += 1
        if not isinstance(txn, Sale | Return | Exchange):
            continue
        sign = Decimal(-1) if isinstance(txn, Return) else Decimal(1)
        totals = txn.totals
        figures.tax += sign * totals.tax_total
        figures.discounts += sign * totals.discount_total
        figures.revenue += sign * (totals.total - totals.tax_total + totals.discount_total)
        for tender in txn.tenders:
            tender_sign = sign
            if isinstance(txn, Exchange) and totals.total < 0:
                tender_sign = Decimal(-1)  # the customer was paid out
            figures.tenders[tender.type] += tender_sign * (tender.amount - tender.change)
    return figures


def expected_records(
    txns: Iterable[StoreTxn], mapping: Mapping
) -> tuple[list[Expected], list[Difference]]:
    """The records NetSuite should hold for the day, and the differences known before asking
    it: transactions the mapping refuses (their outbox item is parked for that reason)."""
    expected: list[Expected] = []
    refused: list[Difference] = []
    for item in txns:
        try:
            plan = plan_postings(item.txn, mapping)
        except Preflight as exc:
            refused.append(
                Difference(
                    "missing",
                    sanitize_external_id(item.txn.txn_id),
                    item.txn.txn_id,
                    f"not posted ({item.status}): {exc.code}: {exc.message}",
                )
            )
            continue
        expected.extend(_expected_of(item.txn, plan, mapping))
    return expected, refused


def _expected_of(txn: Transaction, plan: Plan, mapping: Mapping) -> Iterable[Expected]:
    for posting in plan.postings:
        if posting.record_type == "customerPayment":
            amount = decimal_of(posting.body["payment"])
        else:
            amount = sum(
                (decimal_of(line["amount"]) for line in posting.body["item"]["items"]), ZERO
            )
            if mapping.netsuite_total_includes_tax:
                amount += _tax_of(txn, posting.record_type)
        yield Expected(txn.txn_id, posting.record_type, posting.external_id, amount)


_REFUNDING: frozenset[str] = frozenset({"cashRefund", "creditMemo", "returnAuthorization"})


def _tax_of(txn: Transaction, record_type: str) -> Decimal:
    """The register's tax on the lines a record posts (an exchange's refund side and sale side
    split it)."""
    if isinstance(txn, Exchange):
        lines = txn.returned_lines if record_type in _REFUNDING else txn.sold_lines
    elif isinstance(txn, Sale | Return):
        lines = txn.lines
    else:
        return ZERO
    return sum((ln.tax.amount for ln in lines if ln.tax is not None), ZERO)


# --------------------------------------------------------------------------------------------
# NetSuite's side: the queries (the shell runs them) and the comparison.


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_COLUMNS = "id, externalid, type, foreigntotal, TO_CHAR(trandate, 'YYYY-MM-DD') AS trandate"


def day_query(store_id: str, day: dt.date) -> str:
    """Every transaction NetSuite holds for the store on ``day`` (by the memo the mapping
    writes on every record)."""
    return (
        f"SELECT {_COLUMNS} FROM transaction "
        f"WHERE trandate = TO_DATE('{day.isoformat()}', 'YYYY-MM-DD') "
        f"AND memo LIKE {_quote(f'Store {store_id} /%')} ORDER BY id"
    )


def ids_queries(external_ids: Sequence[str], chunk: int = 200) -> list[str]:
    """The records holding these external ids, on any date (in chunks of ``chunk`` ids)."""
    return [
        f"SELECT {_COLUMNS} FROM transaction WHERE externalid IN "
        f"({', '.join(_quote(e) for e in external_ids[i : i + chunk])}) ORDER BY id"
        for i in range(0, len(external_ids), chunk)
    ]


def compare(
    expected: Sequence[Expected],
    held: Iterable[Held],
    day: dt.date,
    *,
    reasons: MappingABC[str, str] | None = None,
) -> list[Difference]:
    """Every difference between what the store expects and what NetSuite holds.

    ``held``: rows of both queries (duplicates by internal id are ignored). ``reasons``: txn
    id -> why the outbox has not delivered it (for a missing record)."""
    reasons = reasons or {}
    by_eid: dict[str, list[Held]] = defaultdict(list)
    seen_ids: set[str] = set()
    for row in held:
        if row.internal_id in seen_ids:
            continue
        seen_ids.add(row.internal_id)
        by_eid[(row.external_id or f"(internal id {row.internal_id})").lower()].append(row)
    differences: list[Difference] = []
    wanted = {e.external_id.lower() for e in expected}
    for e in expected:
        rows = by_eid.get(e.external_id.lower(), [])
        want = e.record_type if e.amount is None else f"{e.record_type} {e.amount:.2f}"
        if not rows:
            why = reasons.get(e.txn_id)
            differences.append(
                Difference(
                    "missing",
                    e.external_id,
                    e.txn_id,
                    f"no {e.record_type} in NetSuite" + (f" ({why})" if why else ""),
                    expected=want,
                )
            )
            continue
        if len(rows) > 1:
            differences.append(
                Difference(
                    "duplicate",
                    e.external_id,
                    e.txn_id,
                    f"{len(rows)} records hold this external id",
                    expected=want,
                    held=", ".join(f"{r.type_code} #{r.internal_id}" for r in rows),
                )
            )
            continue
        row = rows[0]
        got = f"{row.type_code} {row.amount:.2f} on {row.tran_date}"
        if row.type_code != TYPE_CODES.get(e.record_type, e.record_type):
            differences.append(
                Difference("type", e.external_id, e.txn_id, "another record type", want, got)
            )
        elif e.amount is not None and row.amount.quantize(CENT) != e.amount.quantize(CENT):
            differences.append(
                Difference(
                    "amount",
                    e.external_id,
                    e.txn_id,
                    f"NetSuite total differs by {row.amount - e.amount:+.2f}",
                    want,
                    got,
                )
            )
        elif row.tran_date != day.isoformat():
            differences.append(
                Difference("date", e.external_id, e.txn_id, "posted under another date", want, got)
            )
    for eid, rows in sorted(by_eid.items()):
        if eid in wanted:
            continue
        for row in rows:
            if row.tran_date != day.isoformat():
                continue  # found by id, of another day: not this day's business
            differences.append(
                Difference(
                    "extra",
                    row.external_id or "",
                    None,
                    "in NetSuite for this store and day, rung up by no till of this hub",
                    held=f"{row.type_code} #{row.internal_id} {row.amount:.2f}",
                )
            )
    return differences


@dataclass(slots=True)
class Reconciliation:
    store_id: str
    day: dt.date
    figures: DayFigures
    expected: int
    held: int
    differences: list[Difference]

    @property
    def clean(self) -> bool:
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        kinds = Counter(d.kind for d in self.differences)
        return {
            "store_id": self.store_id,
            "date": self.day.isoformat(),
            "clean": self.clean,
            "store": self.figures.as_json(),
            "records_expected": self.expected,
            "records_in_netsuite": self.held,
            "differences_by_kind": dict(sorted(kinds.items())),
            "differences": [
                {
                    "kind": d.kind,
                    "external_id": d.external_id,
                    "txn_id": d.txn_id,
                    "detail": d.detail,
                    "expected": d.expected,
                    "netsuite": d.held,
                }
                for d in self.differences
            ],
        }


# --------------------------------------------------------------------------------------------
# The daily summary journal.


def journal_external_id(store_id: str, day: dt.date) -> str:
    return sanitize_external_id(f"je-{store_id}-{day:%Y%m%d}")


def adjustment_external_id(store_id: str, day: dt.date) -> str:
    return sanitize_external_id(f"inv-{store_id}-{day:%Y%m%d}")


def daily_inventory_adjustment(
    store_id: str, day: dt.date, txns: Iterable[Transaction], mapping: Mapping
) -> dict[str, Any] | None:
    """The day's stock movement as one ``inventoryAdjustment`` body (ref §1.7), or None when
    nothing moved: per mapped item, units returned minus units sold (weighed items by weight).
    A SKU not in ``mapping.items`` is left out (the catch-all item holds no stock) and named in
    the memo. Raises :class:`JournalUnmapped` without an adjustment account or a location."""
    location = mapping.locations.get(store_id) or mapping.default_location_id
    missing = [
        name
        for name, value in (("inventory_account_id", mapping.inventory_account_id),
                            ("location", location))
        if not value
    ]  # fmt: skip
    if missing:
        raise JournalUnmapped(
            "NS_UNMAPPED_ACCOUNTS",
            f"the daily inventory adjustment needs {', '.join(missing)} in "
            "[uplink.netsuite.mapping]",
            {"missing": missing},
        )
    moved: dict[str, Decimal] = defaultdict(lambda: ZERO)
    unmapped: set[str] = set()
    for txn in txns:
        for lines, sign in _stock_movements(txn):
            for line in lines:
                item = mapping.items.get(line.sku)
                if item is None:
                    unmapped.add(line.sku)
                else:
                    moved[item] += sign * line_quantity(line)
    rows = [
        {"item": {"id": item}, "location": {"id": location}, "adjustQtyBy": json_number(qty)}
        for item, qty in sorted(moved.items(), key=lambda kv: (len(kv[0]), kv[0]))
        if qty != 0
    ]
    if not rows:
        return None
    memo = f"Store {store_id} / daily stock movement {day.isoformat()}"
    if unmapped:
        memo += f" / not adjusted (no NetSuite item): {', '.join(sorted(unmapped))}"
    return {
        "externalId": adjustment_external_id(store_id, day),
        "subsidiary": {"id": mapping.subsidiary_id},
        "adjLocation": {"id": location},
        "account": {"id": mapping.inventory_account_id},
        "tranDate": day.isoformat(),
        "memo": memo,
        "inventory": {"items": rows},
    }


def _stock_movements(txn: Transaction) -> list[tuple[list[Line], Decimal]]:
    """(lines, +1 into stock / -1 out of it) of a transaction."""
    if isinstance(txn, Sale):
        return [(txn.lines, Decimal(-1))]
    if isinstance(txn, Return):
        return [(txn.lines, Decimal(1))]
    if isinstance(txn, Exchange):
        return [(txn.returned_lines, Decimal(1)), (txn.sold_lines, Decimal(-1))]
    return []


class JournalUnmapped(Preflight):
    """An account the journal needs is not mapped."""


def daily_journal(
    store_id: str, day: dt.date, figures: DayFigures, mapping: Mapping
) -> dict[str, Any]:
    """The ``journalEntry`` body of the day (see the module docstring). Raises
    :class:`JournalUnmapped` naming every missing account."""
    accounts = mapping.journal_accounts
    amounts: list[tuple[str, str, Decimal, str]] = []  # (what, account, debit +/credit -, memo)
    missing: list[str] = []

    def account(name: str, account_id: str) -> str:
        if not account_id:
            missing.append(name)
        return account_id

    for tender, amount in sorted(figures.tenders.items()):
        acct = account(f"tenders.{tender}", accounts.tenders.get(tender, ""))
        amounts.append((f"tender {tender}", acct, amount, f"{tender} taken"))
    amounts.append(("discounts", account("discounts", accounts.discounts), figures.discounts, ""))
    amounts.append(("revenue", account("revenue", accounts.revenue), -figures.revenue, ""))
    amounts.append(("tax", account("tax", accounts.tax), -figures.tax, "tax collected"))
    if missing:
        raise JournalUnmapped(
            "NS_UNMAPPED_ACCOUNTS",
            "the daily journal needs these accounts in [uplink.netsuite.mapping.journal_accounts]"
            f": {', '.join(missing)}",
            {"missing": missing},
        )
    lines: list[dict[str, Any]] = []
    debits = credits = ZERO
    for what, acct, amount, memo in amounts:
        if amount == 0:
            continue
        line: dict[str, Any] = {"account": {"id": acct}, "memo": memo or what}
        if amount > 0:
            line["debit"] = json_number(amount)
            debits += amount
        else:
            line["credit"] = json_number(-amount)
            credits += -amount
        if mapping.locations.get(store_id) or mapping.default_location_id:
            line["location"] = {
                "id": mapping.locations.get(store_id) or mapping.default_location_id
            }
        lines.append(line)
    if debits != credits:  # pragma: no cover - by construction (module docstring)
        raise AssertionError(f"journal unbalanced: debits {debits} != credits {credits}")
    body: dict[str, Any] = {
        "externalId": journal_external_id(store_id, day),
        "subsidiary": {"id": mapping.subsidiary_id},
        "tranDate": day.isoformat(),
        "memo": f"Store {store_id} / daily summary {day.isoformat()}",
        "line": {"items": lines},
    }
    return body
