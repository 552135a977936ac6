"""The hub's catalogue: SQLite (WAL) in its own file, a change sequence, tombstones, quarantine.

Theory of operation
-------------------
*Records.* Each entity (:data:`edge.catalogue.model.ENTITIES`) has a table holding, per key,
the record's canonical JSON (``data``) and the change sequence that last touched it (``seq``).
``barcodes`` (barcode → SKU) and ``promotion_skus`` (SKU → promotion) are indexes kept in step
with the records; they never go to the registers.

*Changes.* Every applied change takes the next number of one monotonic sequence (the last one
given is the catalogue's *version*, kept in ``meta``) and writes a row to ``changes``: entity,
key, op (``upsert`` or ``delete``), seq, wall-clock time. A key's new change replaces its old
row (``UNIQUE (entity, key)``): a register only ever needs a key's latest state, so "changes
since N" is every row above N, each key once, and the number of those rows is exactly the size
of the delta. A deletion leaves its row as a *tombstone* until :meth:`prune_tombstones` drops it
after the retention; the highest pruned sequence is :meth:`oldest_cursor_available`. A record
that comes again unchanged (the same canonical bytes) takes no new sequence, so re-sending a
catalogue does not wake every register.

*Applying a delta* (:meth:`apply_delta`, and :meth:`load_full` for a whole catalogue in parts),
on the single writer thread, in ONE transaction:

1. decode the bytes against the model (bad types stop here);
2. :func:`~edge.catalogue.model.check_delta`: everything that needs no other record, and the
   custom-field hygiene (values under names that are not configured are dropped);
3. ``BEGIN IMMEDIATE``; upsert in dependency order (custom fields, tax codes, items with their
   barcodes, prices, promotions with their SKUs), skipping unchanged records;
4. deletions, each leaving a tombstone: promotions, prices, items (with their prices, each its
   own tombstone), tax codes, custom fields (every item still carrying the field is rewritten
   without it, with a new sequence, so the registers drop it too);
5. cross-record checks inside the transaction: an item's tax code exists, a price's and a
   promotion's SKUs exist, a deleted item is named by no promotion, a deleted tax code is used
   by no item, a barcode belongs to one item;
6. a full load then deletes what it did not mention (tombstones again);
7. the version and the cloud's cursor (``upstream_cursor``) are written; ``COMMIT``.

Any failure in 1-6 rolls the transaction back, so the previous catalogue stays in service
untouched, and a model failure puts the delta in ``quarantine`` with its reason
(:class:`~edge.catalogue.errors.DeltaQuarantined`). Readers are never blocked: in WAL mode they
keep reading the last committed version while a load runs. Durability is ``synchronous=NORMAL``:
a power cut may lose the last applied delta, never corrupt the file, and the downsync fetches
that delta again from the stored ``upstream_cursor``.

*Reads* (lookups, the change feed, pricing views) run on a second connection on its own thread.
A snapshot gets its own connection and keeps one read transaction open across all its pages.

Errors are those of :mod:`edge.catalogue.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn, TypeVar, cast

import msgspec

from edge.catalogue.errors import (
    CatalogueError,
    DeltaQuarantined,
    InvalidCursor,
    InvalidDelta,
    StorageFull,
    StoreClosed,
)
from edge.catalogue.feed import (
    ChangePage,
    Cursor,
    FeedDecision,
    Record,
    SnapshotPage,
    decide_feed,
    delta_size,
)
from edge.catalogue.model import (
    ENTITIES,
    CustomField,
    Delta,
    Entity,
    Item,
    Price,
    Promotion,
    TaxCode,
    check_delta,
    decode_delta,
    decode_record,
    encode,
)
from edge.catalogue.view import MemoryCatalogue
from edge.files import is_disk_full

__all__ = ["Applied", "CatalogueStats", "CatalogueStore", "Quarantined", "Snapshot"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
DAY: Final = 86_400.0

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS custom_fields (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tax_codes (
    code TEXT PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    sku TEXT PRIMARY KEY, tax_code TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS barcodes (
    barcode TEXT PRIMARY KEY, sku TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS barcodes_sku ON barcodes (sku);
CREATE TABLE IF NOT EXISTS prices (
    key TEXT PRIMARY KEY, sku TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS prices_sku ON prices (sku);
CREATE TABLE IF NOT EXISTS promotions (
    promotion_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS promotion_skus (
    sku TEXT NOT NULL, promotion_id TEXT NOT NULL, PRIMARY KEY (sku, promotion_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS promotion_skus_promotion ON promotion_skus (promotion_id);
CREATE TABLE IF NOT EXISTS changes (
    seq    INTEGER PRIMARY KEY,
    entity TEXT NOT NULL,
    key    TEXT NOT NULL,
    op     TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    at     REAL NOT NULL,          -- wall clock when applied, epoch seconds
    UNIQUE (entity, key)
);
CREATE INDEX IF NOT EXISTS changes_tombstones ON changes (at) WHERE op = 'delete';
CREATE TABLE IF NOT EXISTS quarantine (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    source   TEXT NOT NULL,
    delta_id TEXT,
    reason   TEXT NOT NULL,
    payload  BLOB NOT NULL
);
"""

# entity -> (table, key column)
_TABLES: Final[dict[Entity, tuple[str, str]]] = {
    "custom_field": ("custom_fields", "name"),
    "tax_code": ("tax_codes", "code"),
    "item": ("items", "sku"),
    "price": ("prices", "key"),
    "promotion": ("promotions", "promotion_id"),
}
_CHUNK: Final = 500  # host parameters per IN (...) query


@dataclass(frozen=True, slots=True)
class Applied:
    delta_id: str
    version: int
    """The catalogue version after the delta (unchanged if nothing changed)."""
    changes: int
    """Keys that took a new sequence number (upserts that changed something, tombstones)."""
    stripped: int
    """Custom-field values dropped because their name is not configured."""


@dataclass(frozen=True, slots=True)
class Quarantined:
    id: int
    at: float
    source: str
    delta_id: str | None
    reason: str
    size: int


@dataclass(frozen=True, slots=True)
class CatalogueStats:
    epoch: str
    version: int
    oldest_cursor_available: int
    custom_fields: int
    tax_codes: int
    items: int
    prices: int
    promotions: int
    tombstones: int
    quarantined: int
    db_bytes: int


def _rollback(db: sqlite3.Connection) -> None:
    # After SQLITE_FULL and some I/O errors SQLite has already rolled back; a second ROLLBACK
    # would fail and hide the real error.
    if db.in_transaction:
        db.execute("ROLLBACK")


def _chunks(values: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _meta(db: sqlite3.Connection, name: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def _set_meta(db: sqlite3.Connection, name: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?)"
        " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


# --------------------------------------------------------------------------------------------
# The apply engine (runs on the writer thread, inside one transaction).


class _Apply:
    """Applies one delta, or the parts of one full load, inside the caller's transaction."""

    def __init__(self, db: sqlite3.Connection, now: float, *, full: bool) -> None:
        self.db = db
        self.now = now
        self.full = full
        self.version = int(_meta(db, "version") or 0)
        self.seq = self.version
        self.stripped = 0
        self.upstream_cursor: str | None = None
        # A full load into an empty store (the first install, the bench): nothing to compare
        # with, nothing to sweep, so records go straight in.
        self.fast = full and db.execute("SELECT 1 FROM changes LIMIT 1").fetchone() is None
        if full:
            # A full load says what exists: definitions come from the load alone and must
            # precede their use (custom fields and tax codes in the first part).
            self.fields: dict[str, CustomField] = {}
            self.tax_codes: set[str] = set()
        else:
            self.fields = {
                f.name: f
                for f in (
                    cast(CustomField, decode_record("custom_field", bytes(r[0])))
                    for r in db.execute("SELECT data FROM custom_fields")
                )
            }
            self.tax_codes = {r[0] for r in db.execute("SELECT code FROM tax_codes")}
        if full and not self.fast:
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _seen (entity TEXT NOT NULL, key TEXT NOT NULL,"
                " PRIMARY KEY (entity, key)) WITHOUT ROWID"
            )
            db.execute("DELETE FROM _seen")
            # Barcodes are rebuilt from the load: one can move between items in any part.
            db.execute("DELETE FROM barcodes")

    @property
    def changes(self) -> int:
        return self.seq - self.version

    # -- one delta / part --------------------------------------------------------------------

    def part(self, delta: Delta) -> None:
        gone = delta.deleted
        fields = dict(self.fields)
        fields.update((f.name, f) for f in delta.custom_fields)
        for name in gone.custom_fields:
            fields.pop(name, None)
        prepared = check_delta(delta, custom_fields=fields, allow_deletions=not self.full)
        self.stripped += prepared.stripped
        codes = (self.tax_codes | {t.code for t in delta.tax_codes}) - set(gone.tax_codes)
        unknown = {item.tax_code for item in prepared.items} - codes
        if unknown:
            sku = next(i.sku for i in prepared.items if i.tax_code in unknown)
            raise InvalidDelta(f"item {sku!r}: unknown tax code {sorted(unknown)[0]!r}")
        if gone.items:
            # Free the barcodes of items going away first: another item may take one over.
            self.db.executemany("DELETE FROM barcodes WHERE sku = ?", [(s,) for s in gone.items])

        self._upsert("custom_field", [(f.name, encode(f), ()) for f in delta.custom_fields])
        self._upsert("tax_code", [(t.code, encode(t), ()) for t in delta.tax_codes])
        if self.fast:
            self._insert_items(prepared.items)
        else:
            self._upsert_items(prepared.items)
        part_skus = {item.sku for item in prepared.items}
        if delta.prices:
            self._require_items({p.sku for p in delta.prices} - part_skus, "a price")
            if self.fast:
                self._insert_prices(delta.prices, prepared.price_keys)
            else:
                rows = zip(prepared.price_keys, delta.prices, strict=True)
                self._upsert("price", [(key, encode(p), (p.sku,)) for key, p in rows])
        if delta.promotions:
            self._upsert_promotions(delta.promotions, part_skus)

        self._delete_promotions(gone.promotions)
        self._delete_prices([ref.key for ref in gone.prices])
        self._delete_items(gone.items, cascade=True)
        self._delete_tax_codes(gone.tax_codes)
        self._delete_custom_fields(gone.custom_fields, strip=True)
        self.fields = fields
        self.tax_codes = codes
        if delta.upstream_cursor is not None:
            self.upstream_cursor = delta.upstream_cursor

    def finish(self) -> int:
        """Sweep what a full load did not mention; write the version. Returns it."""
        if self.full and not self.fast:
            self._delete_promotions(self._unseen("promotion"))
            self._delete_prices(self._unseen("price"))
            self._delete_items(self._unseen("item"), cascade=False)
            self._delete_tax_codes(self._unseen("tax_code"))
            # Items left were all loaded (stripped against the load's fields): nothing to strip.
            self._delete_custom_fields(self._unseen("custom_field"), strip=False)
            self.db.execute("DELETE FROM _seen")
        if self.seq != self.version:
            _set_meta(self.db, "version", str(self.seq))
        if self.upstream_cursor is not None:
            _set_meta(self.db, "upstream_cursor", self.upstream_cursor)
        return self.seq

    # -- upserts -------------------------------------------------------------------------------

    def _existing(self, entity: Entity, keys: Sequence[str]) -> dict[str, bytes]:
        if self.fast or not keys:
            return {}
        table, column = _TABLES[entity]
        found: dict[str, bytes] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, data in self.db.execute(
                f"SELECT {column}, data FROM {table} WHERE {column} IN ({marks})", chunk
            ):
                found[key] = bytes(data)
        return found

    def _changed(
        self, entity: Entity, rows: Sequence[tuple[str, bytes, tuple[str, ...]]]
    ) -> list[tuple[int, str, bytes, tuple[str, ...]]]:
        """The rows that differ from what is stored, each with its new sequence number."""
        if self.full and not self.fast:
            seen = self.db.executemany(
                "INSERT OR IGNORE INTO _seen (entity, key) VALUES (?, ?)",
                [(entity, key) for key, _, _ in rows],
            )
            if seen.rowcount != len(rows):
                # check_delta refuses duplicates within a part; this is one across parts
                # (the second copy would silently win, and its barcodes clash with the first).
                raise InvalidDelta(f"a {entity} appears in two parts of the load")
        existing = self._existing(entity, [key for key, _, _ in rows])
        changed: list[tuple[int, str, bytes, tuple[str, ...]]] = []
        for key, data, extra in rows:
            if existing.get(key) != data:
                self.seq += 1
                changed.append((self.seq, key, data, extra))
        if changed:
            self.db.executemany(
                "INSERT OR REPLACE INTO changes (seq, entity, key, op, at)"
                " VALUES (?, ?, ?, 'upsert', ?)",
                [(seq, entity, key, self.now) for seq, key, _, _ in changed],
            )
        return changed

    def _upsert(self, entity: Entity, rows: Sequence[tuple[str, bytes, tuple[str, ...]]]) -> None:
        if not rows:
            return
        changed = self._changed(entity, rows)
        table, column = _TABLES[entity]
        if entity == "price":
            self.db.executemany(
                "INSERT INTO prices (key, sku, seq, data) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET seq = excluded.seq, data = excluded.data",
                [(key, extra[0], seq, data) for seq, key, data, extra in changed],
            )
        else:
            self.db.executemany(
                f"INSERT INTO {table} ({column}, seq, data) VALUES (?, ?, ?)"
                f" ON CONFLICT({column}) DO UPDATE SET seq = excluded.seq, data = excluded.data",
                [(key, seq, data) for seq, key, data, _ in changed],
            )

    # The fast path: a full load into an empty store. Rows are built in one pass and inserted
    # plainly; a conflict can only be a duplicate within the load, named after the fact.

    def _insert_items(self, items: Sequence[Item]) -> None:
        # Built with map/zip rather than a Python loop: at a million items the loop alone
        # cost a third of SQLite's own time.
        first = self.seq + 1
        self.seq += len(items)
        seqs = range(first, self.seq + 1)
        skus = [item.sku for item in items]
        item_rows = list(
            zip(skus, [i.tax_code for i in items], seqs, map(encode, items), strict=True)
        )
        try:
            self.db.executemany(
                "INSERT INTO items (sku, tax_code, seq, data) VALUES (?, ?, ?, ?)", item_rows
            )
        except sqlite3.IntegrityError:
            for sku in skus:
                row = self.db.execute("SELECT seq FROM items WHERE sku = ?", (sku,)).fetchone()
                if row is not None and row[0] < first:
                    raise InvalidDelta(f"item {sku!r} appears twice in the load") from None
            raise
        self.db.executemany(
            "INSERT INTO changes (seq, entity, key, op, at) VALUES (?, 'item', ?, 'upsert', ?)",
            zip(seqs, skus, itertools.repeat(self.now)),
        )
        barcode_rows = [(code, item.sku) for item in items for code in item.barcodes]
        try:
            self.db.executemany("INSERT INTO barcodes (barcode, sku) VALUES (?, ?)", barcode_rows)
        except sqlite3.IntegrityError:
            self._barcode_conflict(barcode_rows)

    def _insert_prices(self, prices: Sequence[Price], keys: Sequence[str]) -> None:
        first = self.seq + 1
        self.seq += len(prices)
        seqs = range(first, self.seq + 1)
        rows = zip(keys, [p.sku for p in prices], seqs, map(encode, prices), strict=True)
        try:
            self.db.executemany(
                "INSERT INTO prices (key, sku, seq, data) VALUES (?, ?, ?, ?)", rows
            )
        except sqlite3.IntegrityError:
            raise InvalidDelta("a price appears twice in the load") from None
        self.db.executemany(
            "INSERT INTO changes (seq, entity, key, op, at) VALUES (?, 'price', ?, 'upsert', ?)",
            zip(seqs, keys, itertools.repeat(self.now)),
        )

    def _upsert_items(self, items: Sequence[Item]) -> None:
        if not items:
            return
        by_sku = {item.sku: item for item in items}
        changed = self._changed("item", [(i.sku, encode(i), (i.tax_code,)) for i in items])
        self.db.executemany(
            "INSERT INTO items (sku, tax_code, seq, data) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(sku) DO UPDATE SET tax_code = excluded.tax_code,"
            " seq = excluded.seq, data = excluded.data",
            [(key, extra[0], seq, data) for seq, key, data, extra in changed],
        )
        # Barcodes: a full load rebuilt them (all of them go in); otherwise only the changed
        # items' barcodes are replaced.
        if self.full:
            targets: Iterable[Item] = items
        else:
            self.db.executemany(
                "DELETE FROM barcodes WHERE sku = ?", [(key,) for _, key, _, _ in changed]
            )
            targets = (by_sku[key] for _, key, _, _ in changed)
        pairs = [(code, item.sku) for item in targets for code in item.barcodes]
        if pairs:
            cursor = self.db.executemany(
                "INSERT INTO barcodes (barcode, sku) VALUES (?, ?) ON CONFLICT DO NOTHING", pairs
            )
            if cursor.rowcount != len(pairs):
                self._barcode_conflict(pairs)

    def _barcode_conflict(self, pairs: Sequence[tuple[str, str]]) -> NoReturn:
        for code, sku in pairs:
            owner = self.db.execute(
                "SELECT sku FROM barcodes WHERE barcode = ?", (code,)
            ).fetchone()
            if owner is not None and owner[0] != sku:
                raise InvalidDelta(f"item {sku!r}: barcode {code!r} belongs to item {owner[0]!r}")
        raise InvalidDelta("a barcode belongs to two items")  # pragma: no cover

    def _upsert_promotions(self, promotions: Sequence[Promotion], part_skus: set[str]) -> None:
        for promotion in promotions:
            self._require_items(
                set(promotion.skus) - part_skus, f"promotion {promotion.promotion_id!r}"
            )
        rows = [(p.promotion_id, encode(p), ()) for p in promotions]
        changed = self._changed("promotion", rows)
        self.db.executemany(
            "INSERT INTO promotions (promotion_id, seq, data) VALUES (?, ?, ?)"
            " ON CONFLICT(promotion_id) DO UPDATE SET seq = excluded.seq, data = excluded.data",
            [(key, seq, data) for seq, key, data, _ in changed],
        )
        by_id = {p.promotion_id: p for p in promotions}
        ids = [(key,) for _, key, _, _ in changed]
        self.db.executemany("DELETE FROM promotion_skus WHERE promotion_id = ?", ids)
        self.db.executemany(
            "INSERT INTO promotion_skus (sku, promotion_id) VALUES (?, ?)",
            [(sku, key) for (key,) in ids for sku in by_id[key].skus],
        )

    def _require_items(self, skus: Collection[str], who: str) -> None:
        """Every SKU in ``skus`` must be an item (already written in this transaction)."""
        for sku in sorted(skus):
            if self.db.execute("SELECT 1 FROM items WHERE sku = ?", (sku,)).fetchone() is None:
                raise InvalidDelta(f"{who} names SKU {sku!r}, which is not in the catalogue")

    # -- deletions (each leaves a tombstone) ----------------------------------------------------

    def _tombstone(self, entity: Entity, key: str) -> None:
        self.seq += 1
        self.db.execute(
            "INSERT OR REPLACE INTO changes (seq, entity, key, op, at)"
            " VALUES (?, ?, ?, 'delete', ?)",
            (self.seq, entity, key, self.now),
        )

    def _delete_rows(self, entity: Entity, keys: Iterable[str]) -> list[str]:
        table, column = _TABLES[entity]
        deleted: list[str] = []
        for key in keys:
            if self.db.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,)).rowcount:
                self._tombstone(entity, key)
                deleted.append(key)
        return deleted

    def _delete_promotions(self, ids: Sequence[str]) -> None:
        for promotion_id in self._delete_rows("promotion", ids):
            self.db.execute("DELETE FROM promotion_skus WHERE promotion_id = ?", (promotion_id,))

    def _delete_prices(self, keys: Sequence[str]) -> None:
        self._delete_rows("price", keys)

    def _delete_items(self, skus: Sequence[str], *, cascade: bool) -> None:
        for sku in skus:
            named = self.db.execute(
                "SELECT promotion_id FROM promotion_skus WHERE sku = ? LIMIT 1", (sku,)
            ).fetchone()
            if named is not None:
                raise InvalidDelta(
                    f"item {sku!r} is deleted but promotion {named[0]!r} still names it"
                )
            prices = [r[0] for r in self.db.execute("SELECT key FROM prices WHERE sku = ?", (sku,))]
            if prices and not cascade:
                raise InvalidDelta(f"price {prices[0]!r} is for item {sku!r}, not in the load")
            self._delete_rows("price", prices)
            if self._delete_rows("item", [sku]):
                self.db.execute("DELETE FROM barcodes WHERE sku = ?", (sku,))

    def _delete_tax_codes(self, codes: Sequence[str]) -> None:
        for code in codes:
            user = self.db.execute(
                "SELECT sku FROM items WHERE tax_code = ? LIMIT 1", (code,)
            ).fetchone()
            if user is not None:
                raise InvalidDelta(f"tax code {code!r} is deleted but item {user[0]!r} uses it")
        self._delete_rows("tax_code", codes)

    def _delete_custom_fields(self, names: Sequence[str], *, strip: bool) -> None:
        for name in self._delete_rows("custom_field", names):
            if not strip:
                continue
            # Seed 000: a field removed upstream must leave every item (and, through the new
            # sequence numbers, every register). The needle only narrows the scan; the decoded
            # item decides.
            needle = f'"{name}":'.encode()
            rewritten: list[tuple[str, bytes, tuple[str, ...]]] = []
            for sku, data in self.db.execute(
                "SELECT sku, data FROM items WHERE instr(data, ?) > 0", (needle,)
            ).fetchall():
                item = cast(Item, decode_record("item", bytes(data)))
                if name in item.custom:
                    custom = {k: v for k, v in item.custom.items() if k != name}
                    stripped = msgspec.structs.replace(item, custom=custom)
                    rewritten.append((sku, encode(stripped), (stripped.tax_code,)))
            if rewritten:
                changed = self._changed("item", rewritten)
                self.db.executemany(
                    "UPDATE items SET seq = ?, data = ? WHERE sku = ?",
                    [(seq, data, key) for seq, key, data, _ in changed],
                )

    def _unseen(self, entity: Entity) -> list[str]:
        table, column = _TABLES[entity]
        return [
            r[0]
            for r in self.db.execute(
                f"SELECT {column} FROM {table} WHERE {column} NOT IN"
                " (SELECT key FROM _seen WHERE entity = ?)",
                (entity,),
            )
        ]


# --------------------------------------------------------------------------------------------
# Snapshots.


class Snapshot:
    """A consistent point-in-time read of the whole catalogue, in pages.

    Obtained from :meth:`CatalogueStore.snapshot` (an async context manager); holds one read
    transaction on its own connection until the context exits, so every page is of the same
    ``version`` however long the register takes to fetch them.
    """

    def __init__(
        self, db: sqlite3.Connection, pool: ThreadPoolExecutor, epoch: str, version: int
    ) -> None:
        self._db = db
        self._pool = pool
        self.epoch = epoch
        self.version = version

    async def pages(self, page_size: int = 5000) -> AsyncIterator[SnapshotPage]:
        """Every record, entity by entity in dependency order, ``page_size`` at a time."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        loop = asyncio.get_running_loop()
        number = 0
        pending: list[Record] = []
        for entity in ENTITIES:
            after = ""
            while True:
                rows = await loop.run_in_executor(
                    self._pool, self._page, entity, after, page_size - len(pending)
                )
                pending.extend(rows)
                if len(pending) == page_size:
                    yield self._make_page(number, pending, last=False)
                    number += 1
                    pending = []
                if not rows:
                    break
                after = rows[-1].key
        yield self._make_page(number, pending, last=True)

    def _make_page(self, number: int, records: list[Record], *, last: bool) -> SnapshotPage:
        return SnapshotPage(
            epoch=self.epoch, version=self.version, number=number, records=records, last=last
        )

    def _page(self, entity: Entity, after: str, limit: int) -> list[Record]:
        table, column = _TABLES[entity]
        return [
            Record(seq=seq, entity=entity, key=key, op="upsert", data=msgspec.Raw(bytes(data)))
            for key, seq, data in self._db.execute(
                f"SELECT {column}, seq, data FROM {table} WHERE {column} > ?"
                f" ORDER BY {column} LIMIT ?",
                (after, limit),
            )
        ]


# --------------------------------------------------------------------------------------------
# The store.


class CatalogueStore:
    """The catalogue file. Open with :meth:`open`, close with :meth:`close`.

    Calling contract: every method is a coroutine for the event loop; SQLite work runs on the
    store's own threads (one writer, one reader, snapshot readers), never on the loop.
    ``now`` is wall-clock epoch seconds, passed in by the caller.
    """

    def __init__(
        self,
        path: Path,
        *,
        tombstone_retention: float = 90 * DAY,
        cache_mib: int = 32,
        snapshot_threads: int = 2,
        snapshot_ratio: float = 1.0,
    ) -> None:
        self.path = path
        self.tombstone_retention = tombstone_retention
        self.snapshot_ratio = snapshot_ratio
        self._cache_kib = cache_mib * 1024
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="catalogue-writer")
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="catalogue-reader")
        self._snapshot_pool = ThreadPoolExecutor(
            snapshot_threads, thread_name_prefix="catalogue-snapshot"
        )
        self._local = threading.local()
        self._probe: sqlite3.Connection | None = None
        self._probe_lock = threading.Lock()
        # Does the file hold a catalogue (version > 0)? None: not asked yet. It never goes
        # back to False, and this object is the file's only writer (it sets True on commit).
        self._holds_catalogue: bool | None = None
        self._closed = True
        self._epoch = ""
        self._live: tuple[int, int] = (-1, 0)  # (version, records): the snapshot size cache

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._epoch = await self._on_writer(self._init_schema)
        self._closed = False
        await self._on_reader(lambda db: None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        loop = asyncio.get_running_loop()
        for pool in (self._writer_pool, self._reader_pool):
            await loop.run_in_executor(pool, self._close_local)
        for pool in (self._writer_pool, self._reader_pool, self._snapshot_pool):
            await loop.run_in_executor(None, pool.shutdown, True)

    @property
    def epoch(self) -> str:
        """This catalogue's identity (32 hex digits), made when the file was created."""
        return self._epoch

    # -- applying changes from the cloud --------------------------------------------------------

    async def apply_delta(self, delta: bytes | Delta, *, now: float, source: str = "hq") -> Applied:
        """Validate and apply one delta atomically.

        Raises :class:`~edge.catalogue.errors.DeltaQuarantined` (the delta is corrupt; kept in
        quarantine; nothing changed), :class:`~edge.catalogue.errors.StorageFull`.
        """
        return await self.load_parts([delta], full=False, now=now, source=source)

    async def load_full(
        self, parts: Iterable[bytes | Delta], *, now: float, source: str = "hq"
    ) -> Applied:
        """Replace the whole catalogue with ``parts`` (deltas without deletions), atomically:
        anything the parts do not mention is deleted (tombstones), unchanged records keep
        their sequence. Custom fields and tax codes must come before the items using them.

        Calling contract: ``parts`` is consumed on the writer thread (a generator reading a
        downloaded file is fine; one that needs the event loop is not); only one part is held
        in memory at a time.
        """
        return await self.load_parts(parts, full=True, now=now, source=source)

    async def load_parts(
        self, parts: Iterable[bytes | Delta], *, full: bool, now: float, source: str
    ) -> Applied:
        self._check_open()
        try:
            return await self._on_writer(lambda db: self._load(db, parts, full, now, source))
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise StorageFull(f"catalogue storage full: {exc}") from exc
            raise CatalogueError(f"catalogue write failed: {exc}") from exc

    def _load(
        self,
        db: sqlite3.Connection,
        parts: Iterable[bytes | Delta],
        full: bool,
        now: float,
        source: str,
    ) -> Applied:
        current: bytes | Delta = b""
        delta_id: str | None = None
        db.execute("BEGIN IMMEDIATE")
        try:
            engine = _Apply(db, now, full=full)
            for current in parts:
                delta = decode_delta(current) if isinstance(current, bytes) else current
                delta_id = delta_id or delta.delta_id
                engine.part(delta)
            if delta_id is None:
                raise InvalidDelta("no delta: the load has no parts")
            version = engine.finish()
            db.execute("COMMIT")
            if version:
                self._holds_catalogue = True
        except InvalidDelta as exc:
            _rollback(db)
            payload = current if isinstance(current, bytes) else encode(current)
            reason = exc.reason
            if full and delta_id is not None and exc.delta_id is not None:
                reason = f"part {exc.delta_id!r}: {reason}"
            quarantine_id = self._quarantine(db, now, source, delta_id, reason, payload)
            log.error("catalogue: delta %s quarantined (#%d): %s", delta_id, quarantine_id, reason)
            raise DeltaQuarantined(reason, delta_id=delta_id, quarantine_id=quarantine_id) from exc
        except sqlite3.IntegrityError as exc:
            # A constraint the checks above should have caught: still the delta's fault.
            _rollback(db)
            payload = current if isinstance(current, bytes) else encode(current)
            reason = f"constraint failed: {exc}"
            quarantine_id = self._quarantine(db, now, source, delta_id, reason, payload)
            raise DeltaQuarantined(reason, delta_id=delta_id, quarantine_id=quarantine_id) from exc
        except BaseException:
            _rollback(db)
            raise
        if engine.changes:
            log.info(
                "catalogue: %s applied, %d changes, version %d", delta_id, engine.changes, version
            )
        return Applied(
            delta_id=delta_id, version=version, changes=engine.changes, stripped=engine.stripped
        )

    @staticmethod
    def _quarantine(
        db: sqlite3.Connection,
        now: float,
        source: str,
        delta_id: str | None,
        reason: str,
        payload: bytes,
    ) -> int:
        cursor = db.execute(
            "INSERT INTO quarantine (at, source, delta_id, reason, payload) VALUES (?, ?, ?, ?, ?)",
            (now, source, delta_id, reason, payload),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def prune_tombstones(self, *, now: float, keep_after: int | None = None) -> int:
        """Drop tombstones older than the retention; returns how many.

        ``keep_after``: also keep every tombstone above this sequence (the lowest cursor of the
        registers still active), so no active register is forced to a snapshot.
        """
        cutoff = now - self.tombstone_retention

        def write(db: sqlite3.Connection) -> int:
            where = "op = 'delete' AND at < ?"
            args: tuple[float, ...] = (cutoff,)
            if keep_after is not None:
                where += " AND seq <= ?"
                args = (cutoff, keep_after)
            db.execute("BEGIN IMMEDIATE")
            try:
                highest = db.execute(f"SELECT MAX(seq) FROM changes WHERE {where}", args)
                top = highest.fetchone()[0]
                count = db.execute(f"DELETE FROM changes WHERE {where}", args).rowcount
                if top is not None and top > int(_meta(db, "horizon") or 0):
                    _set_meta(db, "horizon", str(top))
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            return int(count)

        self._check_open()
        return await self._on_writer(write)

    # -- versions and the feed ------------------------------------------------------------------

    async def version(self) -> int:
        """The current maximum change sequence (0: nothing applied yet)."""
        return await self._on_reader(lambda db: int(_meta(db, "version") or 0))

    async def oldest_cursor_available(self) -> int:
        """The lowest cursor a delta can still be served from (tombstones below it are gone)."""
        return await self._on_reader(lambda db: int(_meta(db, "horizon") or 0))

    async def upstream_cursor(self) -> str | None:
        """The cloud's cursor stored with the last applied delta that carried one."""
        return await self._on_reader(lambda db: _meta(db, "upstream_cursor"))

    async def plan_feed(self, cursor: Cursor | None) -> FeedDecision:
        """What a register at ``cursor`` should fetch (:func:`~edge.catalogue.feed.decide_feed`,
        with the sizes read in one read transaction)."""

        def read(db: sqlite3.Connection) -> FeedDecision:
            with self._read_transaction(db):
                version = int(_meta(db, "version") or 0)
                horizon = int(_meta(db, "horizon") or 0)
                size = 0.0
                if cursor is not None and cursor.epoch == self._epoch and cursor.seq < version:
                    upserts, tombstones = db.execute(
                        "SELECT COUNT(*), COALESCE(SUM(op = 'delete'), 0) FROM changes"
                        " WHERE seq > ?",
                        (cursor.seq,),
                    ).fetchone()
                    size = delta_size(upserts - tombstones, tombstones)
                live = self._live_records(db, version)
            return decide_feed(
                cursor=cursor,
                epoch=self._epoch,
                version=version,
                oldest_available=horizon,
                delta_size=size,
                snapshot_size=live,
                snapshot_ratio=self.snapshot_ratio,
            )

        return await self._on_reader(read)

    def _live_records(self, db: sqlite3.Connection, version: int) -> int:
        cached_version, records = self._live
        if cached_version != version:
            # Every live record has exactly one upsert row; counted once per version.
            records = db.execute("SELECT COUNT(*) FROM changes WHERE op = 'upsert'").fetchone()[0]
            self._live = (version, records)
        return records

    async def changes_since(self, cursor: Cursor, *, limit: int = 5000) -> ChangePage:
        """The changes after ``cursor``, oldest first, at most ``limit``.

        Raises :class:`~edge.catalogue.errors.InvalidCursor` for a cursor that cannot be served
        by a delta (another catalogue, ahead of the hub, below the oldest available): ask
        :meth:`plan_feed` first; it says snapshot for those.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")

        def read(db: sqlite3.Connection) -> ChangePage:
            with self._read_transaction(db):
                version = int(_meta(db, "version") or 0)
                horizon = int(_meta(db, "horizon") or 0)
                if cursor.epoch != self._epoch:
                    raise InvalidCursor(f"cursor {cursor} is for another catalogue: snapshot")
                if cursor.seq > version:
                    raise InvalidCursor(f"cursor {cursor} is ahead of version {version}: snapshot")
                if cursor.seq < horizon:
                    raise InvalidCursor(
                        f"cursor {cursor} is older than the oldest available ({horizon}): snapshot"
                    )
                rows = db.execute(
                    "SELECT seq, entity, key, op, CASE entity"
                    " WHEN 'item' THEN (SELECT data FROM items WHERE sku = c.key)"
                    " WHEN 'price' THEN (SELECT data FROM prices WHERE key = c.key)"
                    " WHEN 'promotion' THEN (SELECT data FROM promotions"
                    "   WHERE promotion_id = c.key)"
                    " WHEN 'tax_code' THEN (SELECT data FROM tax_codes WHERE code = c.key)"
                    " WHEN 'custom_field' THEN (SELECT data FROM custom_fields"
                    "   WHERE name = c.key)"
                    " END AS data FROM changes AS c WHERE seq > ? ORDER BY seq LIMIT ?",
                    (cursor.seq, limit + 1),
                ).fetchall()
            more = len(rows) > limit
            records = [
                Record(
                    seq=seq,
                    entity=entity,
                    key=key,
                    op=op,
                    data=None if op == "delete" else msgspec.Raw(bytes(data)),
                )
                for seq, entity, key, op, data in rows[:limit]
            ]
            last = records[-1].seq if records else max(cursor.seq, version)
            if not more:
                last = version  # nothing else up to the version: jump to it
            return ChangePage(
                epoch=self._epoch,
                since=cursor.seq,
                version=version,
                records=records,
                next_cursor=str(Cursor(self._epoch, last)),
                more=more,
            )

        self._check_open()
        return await self._on_reader(read)

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """A consistent point-in-time read of the whole catalogue (see :class:`Snapshot`)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        db = await loop.run_in_executor(self._snapshot_pool, self._connect, True)
        try:

            def begin() -> int:
                db.execute("BEGIN")
                # The read transaction starts at its first read: this one pins the version.
                return int(_meta(db, "version") or 0)

            version = await loop.run_in_executor(self._snapshot_pool, begin)
            yield Snapshot(db, self._snapshot_pool, self._epoch, version)
        finally:

            def end() -> None:
                _rollback(db)
                db.close()

            await loop.run_in_executor(self._snapshot_pool, end)

    # -- lookups ---------------------------------------------------------------------------------

    def unknown_skus(self, skus: Collection[str]) -> set[str]:
        """Those of ``skus`` the catalogue does not hold: the intake's review flag
        (``UNKNOWN_SKU``). Blocking, but one indexed query for the whole transaction
        (microseconds), so it is called straight from the event loop or a validation thread,
        on its own connection. None while the store holds no catalogue yet, or is closed:
        nothing to judge a sale by, and a flag on every line would only hide the real ones."""
        wanted = sorted(set(skus))
        if not wanted:
            return set()
        with self._probe_lock:
            if self._closed:
                return set()
            if self._probe is None:
                self._probe = self._connect(reader=True)
            db = self._probe
            if self._holds_catalogue is None:
                self._holds_catalogue = int(_meta(db, "version") or 0) > 0
            if not self._holds_catalogue:
                return set()
            marks = ",".join("?" * len(wanted))
            found = {
                row[0]
                for row in db.execute(f"SELECT sku FROM items WHERE sku IN ({marks})", wanted)
            }
        return set(wanted) - found

    async def item_by_sku(self, sku: str) -> Item | None:
        row = await self._on_reader(
            lambda db: db.execute("SELECT data FROM items WHERE sku = ?", (sku,)).fetchone()
        )
        return None if row is None else cast(Item, decode_record("item", bytes(row[0])))

    async def item_by_barcode(self, barcode: str) -> Item | None:
        row = await self._on_reader(
            lambda db: db.execute(
                "SELECT i.data FROM barcodes AS b JOIN items AS i ON i.sku = b.sku"
                " WHERE b.barcode = ?",
                (barcode,),
            ).fetchone()
        )
        return None if row is None else cast(Item, decode_record("item", bytes(row[0])))

    async def prices_for(self, sku: str) -> list[Price]:
        rows = await self._on_reader(
            lambda db: db.execute("SELECT data FROM prices WHERE sku = ?", (sku,)).fetchall()
        )
        return [cast(Price, decode_record("price", bytes(r[0]))) for r in rows]

    async def promotions_for(self, sku: str) -> list[Promotion]:
        rows = await self._on_reader(
            lambda db: db.execute(
                "SELECT p.data FROM promotion_skus AS s JOIN promotions AS p"
                " ON p.promotion_id = s.promotion_id WHERE s.sku = ? ORDER BY p.promotion_id",
                (sku,),
            ).fetchall()
        )
        return [cast(Promotion, decode_record("promotion", bytes(r[0]))) for r in rows]

    async def tax_codes(self) -> list[TaxCode]:
        rows = await self._on_reader(
            lambda db: db.execute("SELECT data FROM tax_codes ORDER BY code").fetchall()
        )
        return [cast(TaxCode, decode_record("tax_code", bytes(r[0]))) for r in rows]

    async def custom_fields(self) -> list[CustomField]:
        rows = await self._on_reader(
            lambda db: db.execute("SELECT data FROM custom_fields ORDER BY name").fetchall()
        )
        return [cast(CustomField, decode_record("custom_field", bytes(r[0]))) for r in rows]

    async def pricing_view(self, skus: Collection[str]) -> MemoryCatalogue:
        """Everything pricing a basket of ``skus`` can read, from ONE read transaction: feed it
        to :func:`~edge.catalogue.pricing.price_basket`."""
        wanted = sorted(set(skus))

        def read(db: sqlite3.Connection) -> MemoryCatalogue:
            items: list[Item] = []
            prices: list[Price] = []
            promotions: dict[str, Promotion] = {}
            with self._read_transaction(db):
                version = int(_meta(db, "version") or 0)
                for chunk in _chunks(wanted):
                    marks = ",".join("?" * len(chunk))
                    for (data,) in db.execute(
                        f"SELECT data FROM items WHERE sku IN ({marks})", chunk
                    ):
                        items.append(cast(Item, decode_record("item", bytes(data))))
                    for (data,) in db.execute(
                        f"SELECT data FROM prices WHERE sku IN ({marks})", chunk
                    ):
                        prices.append(cast(Price, decode_record("price", bytes(data))))
                    for promotion_id, data in db.execute(
                        "SELECT p.promotion_id, p.data FROM promotions AS p WHERE"
                        " p.promotion_id IN (SELECT promotion_id FROM promotion_skus"
                        f" WHERE sku IN ({marks}))",
                        chunk,
                    ):
                        promotions[promotion_id] = cast(
                            Promotion, decode_record("promotion", bytes(data))
                        )
                taxes = [
                    cast(TaxCode, decode_record("tax_code", bytes(data)))
                    for (data,) in db.execute("SELECT data FROM tax_codes")
                ]
            return MemoryCatalogue(
                items=items,
                prices=prices,
                promotions=promotions.values(),
                tax_codes=taxes,
                version=version,
            )

        return await self._on_reader(read)

    # -- operators -------------------------------------------------------------------------------

    async def quarantined(self, limit: int = 50) -> list[Quarantined]:
        """The most recent quarantined deltas, newest first."""
        rows = await self._on_reader(
            lambda db: db.execute(
                "SELECT id, at, source, delta_id, reason, length(payload) FROM quarantine"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [Quarantined(*row) for row in rows]

    async def quarantined_payload(self, quarantine_id: int) -> bytes | None:
        row = await self._on_reader(
            lambda db: db.execute(
                "SELECT payload FROM quarantine WHERE id = ?", (quarantine_id,)
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    async def stats(self) -> CatalogueStats:
        def read(db: sqlite3.Connection) -> CatalogueStats:
            with self._read_transaction(db):
                counts = {
                    entity: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    for entity, (table, _) in _TABLES.items()
                }
                tombstones = db.execute(
                    "SELECT COUNT(*) FROM changes INDEXED BY changes_tombstones WHERE op = 'delete'"
                ).fetchone()[0]
                quarantined = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
                pages = db.execute("PRAGMA page_count").fetchone()[0]
                size = db.execute("PRAGMA page_size").fetchone()[0]
                return CatalogueStats(
                    epoch=self._epoch,
                    version=int(_meta(db, "version") or 0),
                    oldest_cursor_available=int(_meta(db, "horizon") or 0),
                    custom_fields=counts["custom_field"],
                    tax_codes=counts["tax_code"],
                    items=counts["item"],
                    prices=counts["price"],
                    promotions=counts["promotion"],
                    tombstones=tombstones,
                    quarantined=quarantined,
                    db_bytes=pages * size + self._wal_size(),
                )

        return await self._on_reader(read)

    # -- plumbing ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the catalogue is not open")

    def _wal_size(self) -> int:
        try:
            return self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            return 0

    @staticmethod
    @contextlib.contextmanager
    def _read_transaction(db: sqlite3.Connection) -> Iterator[None]:
        """Several SELECTs that must see one version."""
        db.execute("BEGIN")
        try:
            yield
        finally:
            _rollback(db)

    def _connect(self, reader: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=not reader)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute(f"PRAGMA cache_size = -{self._cache_kib if not reader else 8192}")
        if reader:
            db.execute("PRAGMA query_only = 1")
        else:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA temp_store = MEMORY")
        return db

    def _db(self, reader: bool) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect(reader)
            self._local.db = db
        return db

    def _close_local(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _init_schema(self, db: sqlite3.Connection) -> str:
        db.executescript(_SCHEMA)
        row = _meta(db, "schema_version")
        if row is None:
            _set_meta(db, "schema_version", str(SCHEMA_VERSION))
        elif int(row) > SCHEMA_VERSION:
            raise CatalogueError(
                f"{self.path} has schema version {row}, newer than this hub ({SCHEMA_VERSION}):"
                " downgrade refused"
            )
        epoch = _meta(db, "epoch")
        if epoch is None:
            epoch = uuid.uuid4().hex
            _set_meta(db, "epoch", epoch)
        return epoch

    async def _on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._writer_pool, lambda: fn(self._db(reader=False))
        )

    async def _on_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool, lambda: fn(self._db(reader=True))
        )
