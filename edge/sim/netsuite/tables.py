"""The SuiteQL tables of the simulator: ``item``, ``pricing``, ``transaction``, ``customer``.

Theory of operation
-------------------
Each class adapts one source to :class:`edge.sim.netsuite.suiteql.Table`. ``transaction`` and
``customer`` are small (what the tests wrote) and are filtered and sorted by brute force.
``item`` and ``pricing`` sit on the computed :class:`~edge.sim.netsuite.catalogue.Catalogue`,
which may hold a million items, so they first push the conditions they can down to
:meth:`Catalogue.window`:

- ``item``: ``id`` compared with ``= < <= > >= BETWEEN IN`` and ``lastmodifieddate`` compared with
  ``< <= > >= BETWEEN`` narrow the window. If nothing else is asked and the order is ``id`` (or
  none) or ``lastmodifieddate[, id]`` ascending, the answer comes straight from the window: an
  exact count without a scan and only the page's rows generated. Anything else (a condition on
  another column, another order) still answers exactly, by generating and filtering every row
  of the window: fine for thousands, slow for a million.
- ``pricing``: ``item`` compared the same way narrows the items whose prices are generated;
  always bound it (``item IN (...)`` or an ``item`` range), as the connector does.

Columns (SuiteQL type in brackets):

- ``item``: see :mod:`edge.sim.netsuite.catalogue` (custom fields included).
- ``pricing``: ``item`` [int], ``pricelevel`` [int], ``unitprice`` [number], ``currency`` [int],
  ``quantity`` [int]. ``BUILTIN.DF(pricelevel)`` is the level's name.
- ``transaction``: ``id`` [int], ``tranid`` [text], ``externalid`` [text, compared without case],
  ``type`` [text: CashSale, CashRfnd, CustCred, CustPymt, CustInvc, Journal, RtnAuth, InvAdjst,
  SalesOrd], ``recordtype`` [text: ``cashsale``...], ``trandate`` [date], ``entity`` [int],
  ``memo`` [text], ``foreigntotal`` [number], ``createdfrom`` [int], ``createddate`` [datetime],
  ``lastmodifieddate`` [datetime]. ``BUILTIN.DF(type)`` is "Cash Sale" etc.; ``BUILTIN.DF(entity)``
  the customer's name.
- ``customer``: ``id``, ``entityid``, ``companyname``, ``firstname``, ``lastname``, ``externalid``
  [compared without case], ``isperson`` [bool], ``datecreated``, ``lastmodifieddate``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, Literal

from edge.sim.netsuite.catalogue import Catalogue
from edge.sim.netsuite.records import TYPE_CODES, TYPE_NAMES, RecordStore
from edge.sim.netsuite.suiteql import (
    ColumnType,
    Condition,
    Selection,
    SortKey,
    Table,
    scan_select,
)

__all__ = ["CustomerTable", "ItemTable", "PricingTable", "TransactionTable", "tables_for"]

_ITEM_TYPE_NAMES: Final = {
    "InvtPart": "Inventory Item",
    "NonInvtPart": "Non-inventory Item",
    "Service": "Service",
    "Discount": "Discount",
    "GiftCert": "Gift Certificate",
}


@dataclass(slots=True)
class _Bounds:
    """What a table can push down: an int key window, a date window, an id list."""

    low: int | None = None
    high: int | None = None
    ids: frozenset[int] | None = None
    modified_low: int | None = None
    modified_high: int | None = None

    def narrow(self, condition: Condition, *, is_date: bool) -> bool:
        """Fold ``condition`` in; False if it cannot be pushed down."""
        if condition.negated:
            return False
        op, values = condition.op, condition.values
        low: int | None = None
        high: int | None = None
        if op == "=":
            low = high = values[0]
        elif op == ">":
            low = values[0] + 1
        elif op == ">=":
            low = values[0]
        elif op == "<":
            high = values[0] - 1
        elif op == "<=":
            high = values[0]
        elif op == "between":
            low, high = values[0], values[1]
        elif op == "in" and not is_date:
            members = frozenset(int(v) for v in values)
            self.ids = members if self.ids is None else self.ids & members
            return True
        else:
            return False
        if is_date:
            if op == "=":
                return False  # datetime equality to the second: rare, leave it to the scan
            self.modified_low = _max(self.modified_low, low)
            self.modified_high = _min(self.modified_high, high)
        else:
            self.low = _max(self.low, low)
            self.high = _min(self.high, high)
        return True


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


@dataclass(frozen=True, slots=True)
class _WindowSelection:
    """Rows of a catalogue window, generated only for the slice asked for."""

    catalogue: Catalogue
    order: Literal["id", "lastmodifieddate"]
    window_total: int
    ids: Any  # a callable returning a fresh id iterator

    @property
    def total(self) -> int:
        return self.window_total

    def rows(self, start: int, stop: int) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = []
        for item_id in islice(self.ids(self.order), start, stop):
            row = self.catalogue.item(item_id)
            if row is not None:
                rows.append(row)
        return rows


def _index_order(order: Sequence[SortKey]) -> Literal["id", "lastmodifieddate"] | None:
    keys = [(k.column, k.descending) for k in order]
    if keys in ([], [("id", False)]):
        return "id"
    if keys in ([("lastmodifieddate", False)], [("lastmodifieddate", False), ("id", False)]):
        return "lastmodifieddate"
    return None


class ItemTable:
    """``item``, answered from the catalogue's window index when the query allows."""

    name = "item"
    case_insensitive: frozenset[str] = frozenset()

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.columns: Mapping[str, ColumnType] = catalogue.columns  # type: ignore[assignment]

    def select(self, where: Sequence[Condition], order: Sequence[SortKey]) -> Selection:
        bounds = _Bounds()
        residual = [
            c
            for c in where
            if not (
                (c.column == "id" and bounds.narrow(c, is_date=False))
                or (c.column == "lastmodifieddate" and bounds.narrow(c, is_date=True))
            )
        ]
        window = self.catalogue.window(
            id_min=bounds.low,
            id_max=bounds.high,
            modified_min=bounds.modified_low,
            modified_max=bounds.modified_high,
            ids=bounds.ids,
        )
        index_order = _index_order(order)
        if not residual and index_order is not None:
            return _WindowSelection(self.catalogue, index_order, window.total, window.ids)
        rows = self._rows(window.ids(index_order or "id"))
        return scan_select(rows, residual, [] if index_order else order)

    def _rows(self, ids: Iterator[int]) -> Iterator[Mapping[str, Any]]:
        for item_id in ids:
            row = self.catalogue.item(item_id)
            if row is not None:
                yield row

    def display(self, column: str, value: Any) -> str | None:
        if column == "itemtype":
            return _ITEM_TYPE_NAMES.get(str(value), str(value))
        if column == "isinactive":
            return "Yes" if value else "No"
        return None if value is None else str(value)


class PricingTable:
    """``pricing``: one row per item and price level with a price."""

    name = "pricing"
    case_insensitive: frozenset[str] = frozenset()
    columns: Mapping[str, ColumnType] = {
        "item": "int",
        "pricelevel": "int",
        "unitprice": "number",
        "currency": "int",
        "quantity": "int",
    }

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def select(self, where: Sequence[Condition], order: Sequence[SortKey]) -> Selection:
        bounds = _Bounds()
        residual = [
            c for c in where if not (c.column == "item" and bounds.narrow(c, is_date=False))
        ]
        window = self.catalogue.window(id_min=bounds.low, id_max=bounds.high, ids=bounds.ids)
        rows = (
            {
                "item": price.item,
                "pricelevel": price.pricelevel,
                "unitprice": price.unitprice,
                "currency": price.currency,
                "quantity": price.quantity,
            }
            for item_id in window.ids()
            for price in self.catalogue.prices(item_id)
        )
        return scan_select(rows, residual, order)

    def display(self, column: str, value: Any) -> str | None:
        if column == "pricelevel":
            return self.catalogue.price_levels.get(int(value), str(value))
        if column == "item":
            row = self.catalogue.item(int(value))
            return None if row is None else str(row["itemid"])
        if column == "currency":
            return "US Dollar" if int(value) == 1 else str(value)
        return None if value is None else str(value)


class TransactionTable:
    """``transaction``: every transaction record the store holds."""

    name = "transaction"
    case_insensitive: frozenset[str] = frozenset({"externalid"})
    columns: Mapping[str, ColumnType] = {
        "id": "int",
        "tranid": "text",
        "externalid": "text",
        "type": "text",
        "recordtype": "text",
        "trandate": "date",
        "entity": "int",
        "memo": "text",
        "foreigntotal": "number",
        "createdfrom": "int",
        "createddate": "datetime",
        "lastmodifieddate": "datetime",
    }

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def select(self, where: Sequence[Condition], order: Sequence[SortKey]) -> Selection:
        rows = [
            {
                "id": record.id,
                "tranid": record.tran_id,
                "externalid": record.external_id,
                "type": TYPE_CODES[record.record_type],
                "recordtype": record.record_type.lower(),
                "trandate": record.tran_date,
                "entity": record.entity_id,
                "memo": record.fields.get("memo"),
                "foreigntotal": record.total,
                "createdfrom": None if record.created_from is None else record.created_from[1],
                "createddate": int(record.created_at),
                "lastmodifieddate": int(record.modified_at),
            }
            for record in self.store.all_records()
            if record.is_transaction
        ]
        rows.sort(key=lambda row: int(row["id"] or 0))
        return scan_select(rows, where, order)

    def display(self, column: str, value: Any) -> str | None:
        if column == "type":
            return TYPE_NAMES.get(str(value), str(value))
        if column == "entity":
            customer = self.store.find("customer", internal_id=int(value))
            return None if customer is None else customer.name
        return None if value is None else str(value)


class CustomerTable:
    """``customer``: the customers the store holds (seeded and written)."""

    name = "customer"
    case_insensitive: frozenset[str] = frozenset({"externalid", "email"})
    columns: Mapping[str, ColumnType] = {
        "id": "int",
        "entityid": "text",
        "companyname": "text",
        "firstname": "text",
        "lastname": "text",
        "email": "text",
        "externalid": "text",
        "isperson": "bool",
        "datecreated": "datetime",
        "lastmodifieddate": "datetime",
    }

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def select(self, where: Sequence[Condition], order: Sequence[SortKey]) -> Selection:
        rows = [
            {
                "id": record.id,
                "entityid": record.fields.get("entityId") or f"CUST{record.id}",
                "companyname": record.fields.get("companyName"),
                "firstname": record.fields.get("firstName"),
                "lastname": record.fields.get("lastName"),
                "email": record.fields.get("email"),
                "externalid": record.external_id,
                "isperson": record.fields.get("isPerson") is True,
                "datecreated": int(record.created_at),
                "lastmodifieddate": int(record.modified_at),
            }
            for record in self.store.records("customer")
        ]
        return scan_select(rows, where, order)

    def display(self, column: str, value: Any) -> str | None:
        return None if value is None else str(value)


def tables_for(catalogue: Catalogue, store: RecordStore) -> dict[str, Table]:
    """The tables SuiteQL can read, by lower-case name."""
    tables: list[Table] = [
        ItemTable(catalogue),
        PricingTable(catalogue),
        TransactionTable(store),
        CustomerTable(store),
    ]
    return {table.name: table for table in tables}
