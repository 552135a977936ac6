"""The store's catalogue read from NetSuite over SuiteQL (ref §4.2-4.3).

Theory of operation
-------------------
*Pure part* (queries, rows -> :class:`~edge.catalogue.model.Delta`, the cursor):

- **Full download**: items by keyset, ``WHERE id > <last> ORDER BY id`` with ``limit`` rows and
  ``offset=0`` each time: SuiteQL's offset paging stops at 100,000 rows, keyset paging does not.
  Each page's prices come with one ``pricing`` query over that page's id range.
- **Incremental**: items whose ``lastmodifieddate`` is at or after the last sync less an
  overlap window (the column's time zone is UNCERTAIN, ref §4.3, so a window is re-read and
  duplicates are harmless: an unchanged record takes no new sequence in the store), keyset on
  ``(lastmodifieddate, id)``. A price change may not bump the item's date (UNCERTAIN), and a
  deleted item is invisible to this query: both are caught by the **periodic full download**
  (``full_every_h``), which deletes what it does not see.
- An inactive item, or one of a type the store does not sell, is deleted from the store.
- Barcodes: ``upccode`` plus the comma-separated ``alt_barcodes_field``. Department, age
  restriction and the tax group come from configured custom fields; the configured
  ``custom_fields`` are carried to the registers (the store drops any other).

*Shell* (:class:`NetSuiteCatalogueSync`): runs the queries through the connector, spools a
full download to a file (the store consumes a full load on its writer thread, one part at a
time, so a million items are never all in memory), applies it with
:meth:`~edge.catalogue.store.CatalogueStore.load_full`, or each incremental page with
:meth:`~edge.catalogue.store.CatalogueStore.apply_delta` together with the cursor that resumes
after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import msgspec

from edge.catalogue.model import (
    CustomField,
    CustomValue,
    Deletions,
    Delta,
    Item,
    Price,
    TaxCode,
)
from edge.catalogue.store import CatalogueStore
from edge.uplink.netsuite.connector import NetSuiteConnector
from edge.uplink.netsuite.mapping import CatalogueMapping

Mode = Literal["full", "incremental"]


class Cursor(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where the downsync stands (kept by the store with the delta that reached it)."""

    last_full: float = 0.0
    """When the last full download finished (epoch seconds)."""
    modified_from: float = 0.0
    """Incremental reads start here (the latest ``lastmodifieddate`` seen, epoch seconds)."""
    after_id: int = 0
    """Keyset position inside the incremental window (with ``modified_from``)."""

    def encode(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        if not text:
            return None
        try:
            return msgspec.json.decode(text, type=cls)
        except msgspec.DecodeError:
            return None  # another source's cursor: start with a full download


def plan(cursor: Cursor | None, m: CatalogueMapping, now: float) -> Mode:
    """Full when there is no cursor or the last full download is older than ``full_every_h``."""
    if cursor is None or now - cursor.last_full >= m.full_every_h * 3600:
        return "full"
    return "incremental"


def _columns(m: CatalogueMapping) -> str:
    extra = [m.alt_barcodes_field, m.department_field, m.age_restricted_field, m.tax_group_field]
    extra += m.custom_fields
    names = ["id", "itemid", "displayname", "upccode", "itemtype", "isinactive"]
    names += [c for c in dict.fromkeys(extra) if c]
    return ", ".join(names) + (", TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS modified")


def _timestamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def full_query(m: CatalogueMapping, after_id: int) -> str:
    return f"SELECT {_columns(m)} FROM item WHERE id > {int(after_id)} ORDER BY id"


def incremental_query(m: CatalogueMapping, since: float) -> str:
    return (
        f"SELECT {_columns(m)} FROM item WHERE lastmodifieddate >= "
        f"TO_DATE('{_timestamp(since)}', 'YYYY-MM-DD HH24:MI:SS') ORDER BY lastmodifieddate, id"
    )


def prices_query(ids: Sequence[int]) -> str:
    listed = ", ".join(str(int(i)) for i in ids)
    return (
        "SELECT item, pricelevel, unitprice, quantity FROM pricing "
        f"WHERE item IN ({listed}) ORDER BY item, pricelevel"
    )


def modified_epoch(row: MappingABC[str, Any]) -> float:
    text = str(row.get("modified") or "")
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return 0.0


def _flag(value: Any) -> bool:
    return value in (True, "T", "t", "true", "Yes")


def _custom_value(value: Any) -> str | bool:
    return value if isinstance(value, bool) else str(value)


def to_delta(
    delta_id: str,
    items: Sequence[MappingABC[str, Any]],
    prices: Sequence[MappingABC[str, Any]],
    m: CatalogueMapping,
    *,
    upstream_cursor: str | None = None,
    header: bool = False,
    full: bool = False,
) -> tuple[Delta, list[str]]:
    """One page of SuiteQL rows as a store delta, and the SKUs skipped as unusable (a missing
    SKU or a price that is not a number; logged by the shell). ``header``: include the tax
    codes and custom-field definitions (the first part of a full load). ``full``: a part of a
    full load, which lists no deletions (the load deletes whatever it does not mention)."""
    skipped: list[str] = []
    keep: list[Item] = []
    gone: list[str] = []
    sku_of: dict[str, str] = {}
    for row in items:
        sku = str(row.get("itemid") or "").strip()
        if not sku:
            skipped.append(f"id {row.get('id')}: no itemid")
            continue
        if _flag(row.get("isinactive")) or str(row.get("itemtype")) not in m.item_types:
            gone.append(sku)
            continue
        barcodes = [str(row["upccode"])] if row.get("upccode") else []
        alt = row.get(m.alt_barcodes_field) if m.alt_barcodes_field else None
        barcodes += [b.strip() for b in str(alt or "").split(",") if b.strip()]
        group = row.get(m.tax_group_field) if m.tax_group_field else None
        tax_code = m.tax_groups.get(str(group), m.default_tax_code)
        department = row.get(m.department_field) if m.department_field else None
        custom: dict[str, CustomValue] = {
            name: _custom_value(row[name]) for name in m.custom_fields if row.get(name) is not None
        }
        keep.append(
            Item(
                sku=sku,
                names={m.locale: str(row.get("displayname") or sku)},
                tax_code=tax_code,
                barcodes=list(dict.fromkeys(barcodes)),
                department=str(department) if department else None,
                age_restriction=m.age_restriction
                if m.age_restricted_field and _flag(row.get(m.age_restricted_field))
                else None,
                custom=custom,
            )
        )
        sku_of[str(row.get("id"))] = sku
    price_rows: list[Price] = []
    for row in prices:
        sku_or_none = sku_of.get(str(row.get("item")))
        level = m.price_levels.get(str(row.get("pricelevel")))
        if sku_or_none is None or level is None:
            continue
        if str(row.get("quantity", m.price_quantity)) != str(m.price_quantity):
            continue
        try:
            amount = Decimal(str(row.get("unitprice")))
        except InvalidOperation:
            skipped.append(f"{sku_or_none}: price {row.get('unitprice')!r}")
            continue
        price_rows.append(Price(sku=sku_or_none, amount=amount, level=level))
    delta = Delta(
        delta_id=delta_id,
        upstream_cursor=upstream_cursor,
        custom_fields=[CustomField(name=n, label=n) for n in m.custom_fields] if header else [],
        tax_codes=[TaxCode(code=c, rate=Decimal(r)) for c, r in m.tax_codes.items()]
        if header
        else [],
        items=keep,
        prices=price_rows,
        deleted=Deletions() if full else Deletions(items=gone),
    )
    return delta, skipped


def full_parts(spool: Path) -> Iterator[bytes]:
    """The parts of a spooled full download, one per line (read on the store's writer)."""
    with spool.open("rb") as lines:
        for line in lines:
            yield line.rstrip(b"\n")


# --------------------------------------------------------------------------------------------
# Shell.

#: Above this many changed rows an incremental read becomes a full download (SuiteQL's offset
#: paging stops at 100,000 rows; a change that large is a re-catalogue anyway).
INCREMENTAL_MAX_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class SyncResult:
    mode: Mode
    items: int
    """Item rows read from NetSuite."""
    pages: int
    version: int
    """The store's catalogue version after the sync."""
    skipped: list[str]


class NetSuiteCatalogueSync:
    """Brings the store's catalogue up to date with NetSuite (see the module docstring)."""

    def __init__(
        self,
        store: CatalogueStore,
        connector: NetSuiteConnector,
        mapping: CatalogueMapping,
        *,
        spool_dir: Path,
        clock: Callable[[], float] = time.time,
        on_page: Callable[[Mode, int], None] | None = None,
    ) -> None:
        self._store = store
        self._ns = connector
        self._m = mapping
        self._spool_dir = spool_dir
        self._clock = clock
        self._on_page = on_page

    async def sync(self) -> SyncResult:
        now = self._clock()
        cursor = Cursor.decode(await self._store.upstream_cursor())
        if plan(cursor, self._m, now) == "incremental" and cursor is not None:
            result = await self._incremental(cursor, now)
            if result is not None:
                return result
        return await self._full(now)

    async def _prices(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), self._m.page_size):
            rows += await self._ns.suiteql(prices_query(ids[start : start + self._m.page_size]))
        return rows

    async def _full(self, now: float) -> SyncResult:
        m = self._m
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="netsuite-full-", suffix=".jsonl", dir=self._spool_dir)
        spool = Path(name)
        after, pages, count, newest = 0, 0, 0, 0.0
        skipped: list[str] = []
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    rows, _ = await self._ns.suiteql_page(full_query(m, after), limit=m.page_size)
                    if not rows and pages:
                        break
                    ids = [int(r["id"]) for r in rows]
                    prices = await self._prices(ids) if ids else []
                    delta, bad = to_delta(
                        f"netsuite-full-{int(now)}-{pages}", rows, prices, m,
                        header=pages == 0, full=True,
                    )  # fmt: skip
                    out.write(msgspec.json.encode(delta) + b"\n")
                    skipped += bad
                    pages += 1
                    count += len(rows)
                    newest = max([newest, *(modified_epoch(r) for r in rows)])
                    if self._on_page is not None:
                        self._on_page("full", count)
                    if len(rows) < m.page_size:
                        break
                    after = ids[-1]
                final = Cursor(last_full=now, modified_from=newest or now)
                out.write(
                    msgspec.json.encode(
                        Delta(
                            delta_id=f"netsuite-full-{int(now)}-end", upstream_cursor=final.encode()
                        )
                    )
                    + b"\n"
                )
            applied = await self._store.load_full(full_parts(spool), now=now, source="netsuite")
        finally:
            await asyncio.to_thread(spool.unlink, True)
        return SyncResult("full", count, pages, applied.version, skipped)

    async def _incremental(self, cursor: Cursor, now: float) -> SyncResult | None:
        """None when the window is too large for an incremental read."""
        m = self._m
        rows = await self._ns.suiteql(
            incremental_query(m, cursor.modified_from - m.overlap_s), limit=m.page_size
        )
        if len(rows) > INCREMENTAL_MAX_ROWS:
            return None
        newest = max([cursor.modified_from, *(modified_epoch(r) for r in rows)])
        prices = await self._prices([int(r["id"]) for r in rows])
        after = Cursor(last_full=cursor.last_full, modified_from=newest)
        delta, skipped = to_delta(
            f"netsuite-inc-{int(now)}", rows, prices, m, upstream_cursor=after.encode()
        )
        applied = await self._store.apply_delta(delta, now=now, source="netsuite")
        if self._on_page is not None:
            self._on_page("incremental", len(rows))
        return SyncResult("incremental", len(rows), 1, applied.version, skipped)
