"""The simulated NetSuite item catalogue: up to millions of items without storing them.

Theory of operation
-------------------
An item is a pure function of ``(seed, id)``. Item ids run from 1 to ``size``; every column of
item ``id`` (display name, type, barcodes, prices, custom fields, dates) is derived from a
splitmix64 hash of the seed and the id, so generating a row costs a few microseconds and a
million-item catalogue costs no memory at all. Only *changes* are stored, in an overlay:

- ``update_item(id, now, **columns)`` overrides columns and sets ``lastmodifieddate = now``;
- ``set_price(id, level, price, now)`` overrides one price level (optionally bumping the item's
  ``lastmodifieddate``: whether NetSuite does so is UNCERTAIN, ref §4.3);
- ``deactivate(id, now)`` is ``update_item(id, now, isinactive=True)``, NetSuite's usual way to
  retire an item, which incremental sync sees;
- ``delete_item(id, now)`` makes the item vanish (incremental sync by ``lastmodifieddate`` does
  not see that; only a full sweep does);
- ``add_item(now, **columns)`` appends an item with the next id.

Generated ``lastmodifieddate`` values increase with the id (``generated_from`` at id 1 up to
``generated_until`` at id ``size``), and every overlay change is dated ``now``. Both orders the
SuiteQL engine must serve (by id, and by ``lastmodifieddate, id``) are therefore the merge of an
arithmetic range of generated ids and the small sorted overlay, and counting the rows in an id or
date window is arithmetic plus a bisect: see :meth:`Catalogue.window`. That is what makes keyset
paging over a 250,000-item catalogue take milliseconds per page.

Columns (the SuiteQL ``item`` table, ref §4.3; names are the lower-case SuiteQL ids):

=====================  =========  ===============================================================
 id                    int        internal id, 1..size (then added items)
 itemid                text       the SKU, ``SKU-0000042``
 displayname           text       e.g. ``Organic Coffee Beans 500 g``
 salesdescription      text|null
 itemtype              text       InvtPart (most), NonInvtPart, Service, Discount, GiftCert
 isinactive            bool       3 % of generated items are inactive
 upccode               text|null  the first barcode (EAN-13); 0..3 barcodes per item
 <alt_barcodes_field>  text|null  the other barcodes, comma-separated (a custom field: NetSuite
                                  has one UPC field per item)
 <custom fields>       per kind   ``text``, ``checkbox`` (bool), ``integer``; text and integer
                                  values are null for about 20 % of items
 createddate           datetime   epoch seconds (UTC)
 lastmodifieddate      datetime   epoch seconds (UTC)
=====================  =========  ===============================================================

Prices (the SuiteQL ``pricing`` table): one row per item and price level that has a price; level
``price_levels[0]`` (the base price) always has one, each other level 70 % of the time.
Barcodes are EAN-13 numbers ``2 <slot> <id:010d> <check>`` (GS1 prefix 2 is for restricted
in-store circulation), so they are valid, unique per item and slot, and stable across runs.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_CUSTOM_FIELDS",
    "DEFAULT_GENERATED_UNTIL",
    "DEFAULT_PRICE_LEVELS",
    "ITEM_TYPES",
    "Catalogue",
    "CustomFieldKind",
    "PriceRow",
    "Window",
    "ean13",
]

CustomFieldKind = Literal["text", "checkbox", "integer"]

DEFAULT_CUSTOM_FIELDS: Final[Mapping[str, CustomFieldKind]] = {
    "custitem_pos_department": "text",
    "custitem_pos_age_restricted": "checkbox",
    "custitem_pos_tax_group": "integer",
}
DEFAULT_PRICE_LEVELS: Final[Mapping[int, str]] = {
    1: "Base Price",
    2: "Employee Price",
    5: "Online Price",
}
# 2024-01-01T00:00:00Z: generated items were last modified before this instant.
DEFAULT_GENERATED_UNTIL: Final = 1_704_067_200
_DEFAULT_SPAN_S: Final = 2 * 365 * 86_400

ITEM_TYPES: Final = ("InvtPart", "NonInvtPart", "Service", "Discount", "GiftCert")
STANDARD_COLUMNS: Final = frozenset(
    {
        "id",
        "itemid",
        "displayname",
        "salesdescription",
        "itemtype",
        "isinactive",
        "upccode",
        "createddate",
        "lastmodifieddate",
    }
)
_MAX_SIZE: Final = 10_000_000
_MASK64: Final = (1 << 64) - 1

_ADJECTIVES: Final = (
    "Organic",
    "Classic",
    "Fresh",
    "Premium",
    "Crunchy",
    "Light",
    "Smoked",
    "Spicy",
    "Wholegrain",
    "Sparkling",
    "Roasted",
    "Wild",
    "Golden",
    "Creamy",
    "Extra Virgin",
    "Family",
)
_NOUNS: Final = (
    "Coffee Beans",
    "Apple Juice",
    "Granola",
    "Olive Oil",
    "Dark Chocolate",
    "Mineral Water",
    "Pasta",
    "Tomato Sauce",
    "Cheddar",
    "Rye Bread",
    "Green Tea",
    "Peanut Butter",
    "Oat Milk",
    "Basmati Rice",
    "Honey",
    "Sea Salt Crisps",
    "Dish Soap",
    "Notebook",
    "AA Batteries",
    "Gift Card",
)
_SIZES: Final = ("100 g", "250 g", "500 g", "1 kg", "330 ml", "1 L", "6 pack", "12 pack")
_DEPARTMENTS: Final = ("Grocery", "Dairy", "Bakery", "Beverages", "Household", "Stationery")


def _mix(value: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of ``value``."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def ean13(twelve_digits: str) -> str:
    """``twelve_digits`` with its GS1 check digit appended (GS1 General Specifications §7.9)."""
    if len(twelve_digits) != 12 or not twelve_digits.isdigit():
        raise ValueError("an EAN-13 body is 12 digits")
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(twelve_digits))
    return twelve_digits + str((10 - total % 10) % 10)


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One row of the SuiteQL ``pricing`` table."""

    item: int
    pricelevel: int
    unitprice: Decimal
    currency: int
    quantity: int


@dataclass(frozen=True, slots=True)
class Window:
    """Item ids within an id window and a ``lastmodifieddate`` window, without the rows.

    ``total`` is exact and computed without iterating; :meth:`ids` streams the ids in the asked
    order. Built by :meth:`Catalogue.window`.
    """

    total: int
    _generated: range
    _excluded: frozenset[int]
    _overlay: tuple[tuple[int, int], ...]  # (lastmodifieddate, id), sorted
    _catalogue: Catalogue

    def ids(self, order: Literal["id", "lastmodifieddate"] = "id") -> Iterator[int]:
        """The ids, ascending by id or by ``(lastmodifieddate, id)``."""
        excluded = self._excluded
        generated = (i for i in self._generated if i not in excluded)
        if order == "id":
            overlay_ids = sorted(item_id for _, item_id in self._overlay)
            return heapq.merge(generated, overlay_ids)
        # Generated dates never decrease with the id, so (date, id) order is id order there.
        date_of = self._catalogue.generated_lastmodified
        dated = ((date_of(i), i) for i in generated)
        return (item_id for _, item_id in heapq.merge(dated, self._overlay))


class Catalogue:
    """A seeded, computed item catalogue with a small overlay of changes. No I/O, no clock."""

    def __init__(
        self,
        size: int = 10_000,
        *,
        seed: int = 0,
        custom_fields: Mapping[str, CustomFieldKind] = DEFAULT_CUSTOM_FIELDS,
        alt_barcodes_field: str = "custitem_alt_barcodes",
        price_levels: Mapping[int, str] = DEFAULT_PRICE_LEVELS,
        generated_until: int = DEFAULT_GENERATED_UNTIL,
        generated_span_s: int = _DEFAULT_SPAN_S,
        pricing_quantity: int = 1,
        currency: int = 1,
        price_change_bumps_item: bool = True,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _MAX_SIZE:
            raise ValueError(f"catalogue size must be an int in 0..{_MAX_SIZE}, got {size!r}")
        for name, kind in custom_fields.items():
            _check_custom_field_name(name)
            if kind not in ("text", "checkbox", "integer"):
                raise ValueError(f"custom field {name!r}: unknown kind {kind!r}")
        _check_custom_field_name(alt_barcodes_field)
        if alt_barcodes_field in custom_fields:
            raise ValueError(f"{alt_barcodes_field!r} is both a custom field and the barcode one")
        if not price_levels:
            raise ValueError("at least one price level (the base price) is needed")
        if generated_span_s < 0:
            raise ValueError("generated_span_s must be >= 0")
        self.size = size
        self.seed = seed
        self.custom_fields: dict[str, CustomFieldKind] = dict(custom_fields)
        self.alt_barcodes_field = alt_barcodes_field
        self.price_levels: dict[int, str] = dict(price_levels)
        self.generated_until = generated_until
        self.generated_from = generated_until - generated_span_s
        self.pricing_quantity = pricing_quantity
        self.currency = currency
        self.price_change_bumps_item = price_change_bumps_item
        self._seed_hash = _mix(seed & _MASK64)
        self._base_level = next(iter(self.price_levels))
        # The overlay. Ids <= size live in _overrides/_deleted; ids > size in _added.
        self._overrides: dict[int, dict[str, Any]] = {}
        self._price_overrides: dict[int, dict[int, Decimal | None]] = {}
        self._modified_at: dict[int, int] = {}
        self._deleted: set[int] = set()
        self._touched: list[int] = []  # sorted generated ids that left the generated stream
        self._touched_set: set[int] = set()
        self._added: dict[int, dict[str, Any]] = {}
        self._next_id = size + 1

    # -- the columns --------------------------------------------------------------------------

    @property
    def columns(self) -> dict[str, str]:
        """SuiteQL column name -> type (``int``, ``text``, ``bool``, ``datetime``)."""
        columns = {
            "id": "int",
            "itemid": "text",
            "displayname": "text",
            "salesdescription": "text",
            "itemtype": "text",
            "isinactive": "bool",
            "upccode": "text",
            "createddate": "datetime",
            "lastmodifieddate": "datetime",
            self.alt_barcodes_field: "text",
        }
        kinds = {"text": "text", "checkbox": "bool", "integer": "int"}
        columns.update({name: kinds[kind] for name, kind in self.custom_fields.items()})
        return columns

    @property
    def max_id(self) -> int:
        """The highest id ever given (deleted ones included)."""
        return self._next_id - 1

    def generated_lastmodified(self, item_id: int) -> int:
        """The generated ``lastmodifieddate`` of id ``item_id``: never decreases with the id."""
        span = self.generated_until - self.generated_from
        return self.generated_from + ((item_id - 1) * span) // max(self.size - 1, 1)

    def _hash(self, item_id: int, salt: int = 0) -> int:
        return _mix((self._seed_hash ^ (item_id * 0x100000001B3 + salt)) & _MASK64)

    def _generated_row(self, item_id: int) -> dict[str, Any]:
        h = self._hash(item_id)
        h2 = self._hash(item_id, 1)
        roll = h % 100
        itemtype = (
            "InvtPart"
            if roll < 85
            else "NonInvtPart"
            if roll < 92
            else "Service"
            if roll < 97
            else "Discount"
            if roll < 99
            else "GiftCert"
        )
        name = (
            f"{_ADJECTIVES[(h >> 8) % len(_ADJECTIVES)]} {_NOUNS[(h >> 16) % len(_NOUNS)]} "
            f"{_SIZES[(h >> 24) % len(_SIZES)]}"
        )
        barcode_roll = (h >> 32) % 100
        barcode_count = (
            0 if barcode_roll < 10 else 1 if barcode_roll < 70 else 2 if barcode_roll < 90 else 3
        )
        barcodes = [ean13(f"2{slot}{item_id:010d}") for slot in range(barcode_count)]
        modified = self.generated_lastmodified(item_id)
        row: dict[str, Any] = {
            "id": item_id,
            "itemid": f"SKU-{item_id:07d}",
            "displayname": name,
            "salesdescription": None if (h >> 40) % 5 == 0 else f"{name} (item {item_id})",
            "itemtype": itemtype,
            "isinactive": (h >> 48) % 100 < 3,
            "upccode": barcodes[0] if barcodes else None,
            self.alt_barcodes_field: ",".join(barcodes[1:]) or None,
            "createddate": modified - (h2 % (365 * 86_400)),
            "lastmodifieddate": modified,
        }
        for index, (field, kind) in enumerate(self.custom_fields.items()):
            hv = self._hash(item_id, 16 + index)
            if kind == "checkbox":
                row[field] = hv % 10 == 0
            elif hv % 5 == 0:
                row[field] = None
            elif kind == "integer":
                row[field] = (hv >> 8) % 1000
            else:
                row[field] = _DEPARTMENTS[(hv >> 8) % len(_DEPARTMENTS)]
        return row

    def _generated_prices(self, item_id: int) -> dict[int, Decimal]:
        h = self._hash(item_id, 2)
        base_cents = ((h >> 4) % 200) * 100 + 99  # 0.99 .. 199.99, shelf-price endings
        prices: dict[int, Decimal] = {}
        for index, level in enumerate(self.price_levels):
            if index == 0:
                cents = base_cents
            elif (self._hash(item_id, 3 + index) % 10) < 7:
                cents = base_cents * (100 - 5 * index) // 100
            else:
                continue
            prices[level] = Decimal(cents) / 100
        return prices

    # -- reading -------------------------------------------------------------------------------

    def exists(self, item_id: int) -> bool:
        if item_id in self._added:
            return True
        return 1 <= item_id <= self.size and item_id not in self._deleted

    def item(self, item_id: int) -> dict[str, Any] | None:
        """The item's columns (SuiteQL names, typed values), or None if there is no such item."""
        added = self._added.get(item_id)
        if added is not None:
            return dict(added)
        if not 1 <= item_id <= self.size or item_id in self._deleted:
            return None
        row = self._generated_row(item_id)
        override = self._overrides.get(item_id)
        if override:
            row.update(override)
        if item_id in self._modified_at:
            row["lastmodifieddate"] = self._modified_at[item_id]
        return row

    def is_active(self, item_id: int) -> bool:
        row = self.item(item_id)
        return row is not None and not row["isinactive"]

    def prices(self, item_id: int) -> list[PriceRow]:
        """The item's ``pricing`` rows, by price level order; empty for no such item."""
        if not self.exists(item_id):
            return []
        prices = {} if item_id in self._added else self._generated_prices(item_id)
        for level, price in self._price_overrides.get(item_id, {}).items():
            if price is None:
                prices.pop(level, None)
            else:
                prices[level] = price
        return [
            PriceRow(item_id, level, prices[level], self.currency, self.pricing_quantity)
            for level in self.price_levels
            if level in prices
        ]

    def live_ids(self) -> Iterator[int]:
        """Every existing id, ascending (a full sweep; for tests and small catalogues)."""
        return self.window().ids()

    def __len__(self) -> int:
        return self.window().total

    def window(
        self,
        *,
        id_min: int | None = None,
        id_max: int | None = None,
        modified_min: int | None = None,
        modified_max: int | None = None,
        ids: Iterable[int] | None = None,
    ) -> Window:
        """The existing items with ``id_min <= id <= id_max`` and ``modified_min <=
        lastmodifieddate <= modified_max`` (None: unbounded), optionally only among ``ids``.

        Cost: O(log size + overlay size), or O(len(ids)) with ``ids``; never a scan.
        """
        if ids is not None:
            wanted = sorted(
                {
                    i
                    for i in ids
                    if (id_min is None or i >= id_min) and (id_max is None or i <= id_max)
                }
            )
            chosen: list[tuple[int, int]] = []
            for item_id in wanted:
                row = self.item(item_id)
                if row is not None and _within(row["lastmodifieddate"], modified_min, modified_max):
                    chosen.append((row["lastmodifieddate"], item_id))
            chosen.sort()
            return Window(len(chosen), range(0), frozenset(), tuple(chosen), self)

        low = max(1, id_min if id_min is not None else 1)
        high = min(self.size, id_max if id_max is not None else self.size)
        if modified_min is not None:
            low = max(low, self._first_generated_at_or_after(modified_min))
        if modified_max is not None:
            high = min(high, self._last_generated_at_or_before(modified_max))
        generated = range(low, high + 1) if low <= high else range(0)
        if generated:
            left = bisect.bisect_left(self._touched, generated.start)
            right = bisect.bisect_right(self._touched, generated.stop - 1)
            excluded = frozenset(self._touched[left:right])
        else:
            excluded = frozenset()

        overlay: list[tuple[int, int]] = []
        for item_id in self._overlay_ids():
            if (id_min is not None and item_id < id_min) or (
                id_max is not None and item_id > id_max
            ):
                continue
            row = self.item(item_id)
            if row is not None and _within(row["lastmodifieddate"], modified_min, modified_max):
                overlay.append((row["lastmodifieddate"], item_id))
        overlay.sort()
        total = len(generated) - len(excluded) + len(overlay)
        return Window(total, generated, excluded, tuple(overlay), self)

    def _overlay_ids(self) -> Iterator[int]:
        for item_id in self._modified_at:
            if item_id not in self._deleted:
                yield item_id
        yield from self._added

    def _first_generated_at_or_after(self, instant: int) -> int:
        low, high = 1, self.size + 1  # answer in [1, size + 1]
        while low < high:
            middle = (low + high) // 2
            if self.generated_lastmodified(middle) >= instant:
                high = middle
            else:
                low = middle + 1
        return low

    def _last_generated_at_or_before(self, instant: int) -> int:
        return self._first_generated_at_or_after(instant + 1) - 1

    # -- changing ------------------------------------------------------------------------------

    def _touch(self, item_id: int, now: float) -> None:
        if item_id <= self.size and item_id not in self._touched_set:
            self._touched_set.add(item_id)
            bisect.insort(self._touched, item_id)
        if item_id in self._added:
            self._added[item_id]["lastmodifieddate"] = int(now)
        else:
            self._modified_at[item_id] = int(now)

    def _require(self, item_id: int) -> None:
        if not self.exists(item_id):
            raise KeyError(f"no item {item_id}")

    def update_item(self, item_id: int, now: float, **columns: Any) -> None:
        """Change some columns of an existing item; its ``lastmodifieddate`` becomes ``now``."""
        self._require(item_id)
        allowed = set(self.columns) - {"id", "createddate", "lastmodifieddate"}
        unknown = set(columns) - allowed
        if unknown:
            raise ValueError(f"unknown or read-only item columns: {sorted(unknown)}")
        if item_id in self._added:
            self._added[item_id].update(columns)
        else:
            self._overrides.setdefault(item_id, {}).update(columns)
        self._touch(item_id, now)

    def deactivate(self, item_id: int, now: float) -> None:
        """Mark the item inactive, as NetSuite admins retire items (incremental sync sees it)."""
        self.update_item(item_id, now, isinactive=True)

    def set_price(self, item_id: int, level: int, price: Decimal | str | None, now: float) -> None:
        """Set (or, with None, remove) the item's price at ``level``."""
        self._require(item_id)
        if level not in self.price_levels:
            raise ValueError(f"unknown price level {level}")
        value = None if price is None else Decimal(price)
        self._price_overrides.setdefault(item_id, {})[level] = value
        if self.price_change_bumps_item:
            self._touch(item_id, now)

    def delete_item(self, item_id: int, now: float) -> None:
        """Delete the item: it disappears from ``item`` and ``pricing``."""
        self._require(item_id)
        del now  # a deletion leaves no row to date
        if item_id in self._added:
            del self._added[item_id]
        else:
            self._deleted.add(item_id)
            if item_id not in self._touched_set:
                self._touched_set.add(item_id)
                bisect.insort(self._touched, item_id)
        self._price_overrides.pop(item_id, None)

    def add_item(self, now: float, **columns: Any) -> int:
        """Create an item with the next id; unspecified columns get plain defaults."""
        item_id = self._next_id
        self._next_id += 1
        allowed = set(self.columns) - {"id", "createddate", "lastmodifieddate"}
        unknown = set(columns) - allowed
        if unknown:
            raise ValueError(f"unknown or read-only item columns: {sorted(unknown)}")
        row: dict[str, Any] = dict.fromkeys(self.columns)
        row.update(
            {
                "id": item_id,
                "itemid": f"SKU-{item_id:07d}",
                "displayname": f"New item {item_id}",
                "itemtype": "InvtPart",
                "isinactive": False,
                "createddate": int(now),
                "lastmodifieddate": int(now),
            }
        )
        row.update({k: False for k, kind in self.custom_fields.items() if kind == "checkbox"})
        row.update(columns)
        self._added[item_id] = row
        return item_id


def _within(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _check_custom_field_name(name: str) -> None:
    if (
        not name.startswith("custitem")
        or not name.replace("_", "").isalnum()
        or not name.isascii()
        or name != name.lower()
    ):
        raise ValueError(f"custom field {name!r} must be a lower-case custitem... script id")


def price_levels_of(catalogue: Catalogue) -> Sequence[int]:
    """The configured price level ids, base level first."""
    return list(catalogue.price_levels)
