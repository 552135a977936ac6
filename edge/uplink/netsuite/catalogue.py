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

*Shell* (:class:`NetSuiteCatalogueSource`): NetSuite as one of the catalogue service's
sources (:mod:`edge.catalogue.source`). It runs the queries through the connector and yields
each page as a delta; the service (:mod:`edge.catalogue.service`) spools a full download to a
file and loads it in one transaction (a million items are never all in memory), or applies the
incremental delta together with the cursor that resumes after it. NetSuite's retry-later
answers (429, 5xx, the 401 quirk, no connection) become ``SourceUnavailable`` (the service
retries sooner); any other refusal becomes ``SourceRefused``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

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
from edge.catalogue.source import Download, SourceRefused, SourceUnavailable
from edge.outbox.policy import RetryLater
from edge.uplink.netsuite.connector import NetSuiteConnector, RequestFailed
from edge.uplink.netsuite.mapping import CatalogueMapping

Mode = Literal["full", "incremental"]
T = TypeVar("T")


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


# --------------------------------------------------------------------------------------------
# Shell.

#: Above this many changed rows an incremental read becomes a full download (SuiteQL's offset
#: paging stops at 100,000 rows; a change that large is a re-catalogue anyway).
INCREMENTAL_MAX_ROWS = 50_000


@dataclass(slots=True)
class ReadStats:
    """What the last :meth:`NetSuiteCatalogueSource.fetch` read (the CLI reports it)."""

    mode: Mode = "full"
    items: int = 0
    """Item rows read from NetSuite."""
    pages: int = 0
    skipped: list[str] = field(default_factory=list)


class NetSuiteCatalogueSource:
    """NetSuite as a catalogue source (:class:`edge.catalogue.source.CatalogueSource`): the
    hub's catalogue service applies what it yields, spooling a full download to a file."""

    name = "netsuite"

    def __init__(
        self,
        connector: NetSuiteConnector,
        mapping: CatalogueMapping,
        *,
        clock: Callable[[], float] = time.time,
        on_page: Callable[[Mode, int], None] | None = None,
        owns_connector: bool = False,
    ) -> None:
        self._ns = connector
        self._m = mapping
        self._clock = clock
        self._on_page = on_page
        self._owns = owns_connector
        self.last = ReadStats()

    async def aclose(self) -> None:
        if self._owns:
            await self._ns.aclose()

    async def fetch(self, cursor: str | None) -> Download:
        now = self._clock()
        position = Cursor.decode(cursor)
        if plan(position, self._m, now) == "incremental" and position is not None:
            part = await self._step("incremental", self._incremental(position, now))
            if part is not None:
                return Download(full=False, reason="changes", parts=_one(part))
            reason = "too_many_changes"
        else:
            reason = "no_cursor" if position is None else "full_due"
        return Download(full=True, reason=reason, parts=self._full(now))

    @staticmethod
    async def _step(step: str, work: Awaitable[T]) -> T:
        """``work``, with NetSuite's failures as the catalogue's source errors."""
        try:
            return await work
        except RequestFailed as exc:
            if isinstance(exc.outcome, RetryLater):
                raise SourceUnavailable(exc.outcome.reason, step=step) from None
            raise SourceRefused(str(exc.outcome), step=step) from None

    async def _prices(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), self._m.page_size):
            rows += await self._ns.suiteql(
                prices_query(ids[start : start + self._m.page_size]), background=True
            )
        return rows

    async def _full(self, now: float) -> AsyncIterator[bytes]:
        m = self._m
        self.last = stats = ReadStats("full")
        after, newest = 0, 0.0
        while True:
            rows, _ = await self._step(
                f"full page {stats.pages}",
                self._ns.suiteql_page(full_query(m, after), limit=m.page_size, background=True),
            )
            if not rows and stats.pages:
                break
            ids = [int(r["id"]) for r in rows]
            prices = await self._step("prices", self._prices(ids)) if ids else []
            delta, bad = to_delta(
                f"netsuite-full-{int(now)}-{stats.pages}", rows, prices, m,
                header=stats.pages == 0, full=True,
            )  # fmt: skip
            stats.skipped += bad
            stats.pages += 1
            stats.items += len(rows)
            newest = max([newest, *(modified_epoch(r) for r in rows)])
            if self._on_page is not None:
                self._on_page("full", stats.items)
            yield msgspec.json.encode(delta)
            if len(rows) < m.page_size:
                break
            after = ids[-1]
        final = Cursor(last_full=now, modified_from=newest or now)
        yield msgspec.json.encode(
            Delta(delta_id=f"netsuite-full-{int(now)}-end", upstream_cursor=final.encode())
        )

    async def _incremental(self, cursor: Cursor, now: float) -> bytes | None:
        """One delta of what changed, or None when the window is too large to read this way."""
        m = self._m
        rows = await self._ns.suiteql(
            incremental_query(m, cursor.modified_from - m.overlap_s),
            limit=m.page_size,
            background=True,
        )
        if len(rows) > INCREMENTAL_MAX_ROWS:
            return None
        newest = max([cursor.modified_from, *(modified_epoch(r) for r in rows)])
        prices = await self._prices([int(r["id"]) for r in rows])
        after = Cursor(last_full=cursor.last_full, modified_from=newest)
        delta, skipped = to_delta(
            f"netsuite-inc-{int(now)}", rows, prices, m, upstream_cursor=after.encode()
        )
        self.last = ReadStats("incremental", len(rows), 1, skipped)
        if self._on_page is not None:
            self._on_page("incremental", len(rows))
        return msgspec.json.encode(delta)


async def _one(part: bytes) -> AsyncIterator[bytes]:
    yield part
