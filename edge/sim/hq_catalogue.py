"""A simulated HQ catalogue API: the cloud side of :mod:`edge.catalogue.source`, over real HTTP.

Theory of operation
-------------------
:class:`HqCatalogueSimulator` is the cloud's catalogue and its change history, with no I/O:

* the current records (custom fields, tax codes, items, prices, promotions), seeded by the
  deterministic :func:`generate_catalogue` and changed at run time by its methods
  (:meth:`~HqCatalogueSimulator.upsert_item`, :meth:`~HqCatalogueSimulator.delete_item`,
  :meth:`~HqCatalogueSimulator.set_price`, :meth:`~HqCatalogueSimulator.delete_custom_field`,
  …). Every method leaves the catalogue consistent (a price names an item, an item's tax code
  exists, a barcode has one owner) or raises ``ValueError`` and changes nothing;
* the **change history**: every change a method makes is appended with the next sequence
  number and the record *as it was then* (or the key of a deletion). Because each method leaves
  the catalogue consistent and appends its changes in dependency order (a promotion is updated
  before the item it stops naming is deleted), every prefix of the history is a consistent
  catalogue; a page of changes is the history between two cursors collapsed to each key's last
  change, so applying it takes the hub from one consistent state to another. The seed is not
  in the history: a new client starts with a full download. :meth:`~HqCatalogueSimulator.
  expire_changes` trims the history; a cursor below the trim answers 410 ``CURSOR_EXPIRED``;
* **snapshots** for paged full downloads: the first page copies the catalogue (the records are
  immutable, so a copy is of references) and names it; later pages read that copy, so a full
  download is consistent however many changes happen meanwhile. The last few are kept;
* the **fault script**: FIFO, one fault consumed per catalogue request (``changes`` or
  ``full``), after authentication: ``server_error`` (500/502/503), ``hang`` (never answers; the
  client times out), ``latency`` (answers late), ``corrupt`` (a 200 whose delta breaks the
  model: a price for an item that does not exist; the hub must quarantine it).

:func:`make_hq_catalogue_app` is the thin aiohttp shell and :func:`run_hq_catalogue` serves it on a
real socket (``127.0.0.1``, port 0 by default). The contract is in :mod:`edge.catalogue.source`.
Cursors are ``<catalogue id>.<sequence>``; a restarted simulator is another catalogue.

Simulator controls (no token; bind to loopback): ``GET /_sim/stats``; ``POST /_sim/faults``
with ``{"script": [{"kind": "server_error", "status": 503}], "clear_script": false}``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import enum
import itertools
import math
import random
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal

import msgspec
from aiohttp import web

from edge.catalogue.model import (
    BASE_PRICE_LEVEL,
    ENTITIES,
    AmountOff,
    BuyXGetY,
    CustomField,
    CustomValue,
    Deletions,
    Delta,
    Entity,
    Item,
    MixAndMatch,
    PercentOff,
    Price,
    PriceRef,
    Promotion,
    TaxCode,
    price_key,
)
from edge.catalogue.source import CHANGES_PATH, FULL_PATH, MAX_LIMIT

__all__ = [
    "DEFAULT_TOKEN",
    "CatalogueFault",
    "CatalogueFaultKind",
    "GeneratedCatalogue",
    "HqCatalogueServer",
    "HqCatalogueSimulator",
    "generate_catalogue",
    "make_hq_catalogue_app",
    "run_hq_catalogue",
]

DEFAULT_TOKEN: Final = "sim-catalogue-token"
_CENT: Final = Decimal("0.01")

# -- the deterministic catalogue ---------------------------------------------------------------

_ADJECTIVES: Final = ("Fresh", "Organic", "Classic", "Crunchy", "Smooth", "Golden", "Wild", "Mild")
_NOUNS: Final = ("Apples", "Coffee", "Bread", "Cheese", "Pasta", "Tea", "Yoghurt", "Rice", "Soap")
_COLORS: Final = ("red", "green", "blue", "white", "black")
_ORIGINS: Final = ("FR", "IT", "ES", "DE", "NL", "US")


def ean13(body12: str) -> str:
    """``body12`` (12 digits) with its EAN-13 check digit (GS1 General Specifications 7.9.1)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body12))
    return body12 + str((10 - total % 10) % 10)


@dataclass(frozen=True, slots=True)
class GeneratedCatalogue:
    custom_fields: list[CustomField]
    tax_codes: list[TaxCode]
    items: list[Item]
    prices: list[Price]
    promotions: list[Promotion]


def generated_sku(index: int) -> str:
    return f"SKU-{index:07d}"


def generated_barcode(index: int) -> str:
    return ean13(f"20{index:010d}")


def generate_catalogue(n_items: int, *, seed: int = 0) -> GeneratedCatalogue:
    """``n_items`` items, the same for the same arguments: SKU ``SKU-0000000``…, an EAN-13 each
    (:func:`generated_barcode`; every 10th a second one), names in en and fr, three tax codes
    (STD 20 % / RED 5.5 % included, ZERO), departments, a weighed item in 40 (per kg), an age
    restriction in 53, custom fields ``color`` and ``origin`` on some; a base price each and a
    ``member`` price on every 4th; and a few promotions of every kind (one of them expired)."""
    rng = random.Random(seed)
    fields = [
        CustomField(name="color", label="Colour"),
        CustomField(name="origin", label="Country of origin"),
    ]
    taxes = [
        TaxCode(code="STD", rate=Decimal("0.2"), included=True, description="standard"),
        TaxCode(code="RED", rate=Decimal("0.055"), included=True, description="reduced"),
        TaxCode(code="ZERO", rate=Decimal(0), included=True, description="exempt"),
    ]
    items: list[Item] = []
    prices: list[Price] = []
    for i in range(n_items):
        weighed = i % 40 == 7
        custom: dict[str, CustomValue] = {}
        if i % 2 == 0:
            custom["color"] = _COLORS[i % len(_COLORS)]
        if i % 5 == 0:
            custom["origin"] = _ORIGINS[i % len(_ORIGINS)]
        barcodes = [generated_barcode(i)]
        if i % 10 == 3:
            barcodes.append(ean13(f"21{i:010d}"))
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {i}"
        items.append(
            Item(
                sku=generated_sku(i),
                names={"en": name, "fr": f"{name} (fr)"},
                tax_code="ZERO" if i % 17 == 0 else "RED" if i % 3 == 0 else "STD",
                barcodes=barcodes,
                unit="kg" if weighed else "each",
                weighed=weighed,
                department=f"D{i % 12 + 1:02d}",
                age_restriction=18 if i % 53 == 11 else None,
                custom=custom,
            )
        )
        amount = Decimal(rng.randint(49, 4999)).scaleb(-2)
        prices.append(Price(sku=generated_sku(i), amount=amount))
        if i % 4 == 1:
            member = (amount * Decimal("0.9")).quantize(_CENT)
            prices.append(Price(sku=generated_sku(i), amount=member, level="member"))
    return GeneratedCatalogue(fields, taxes, items, prices, _promotions(items))


def _promotions(items: Sequence[Item]) -> list[Promotion]:
    counted = [item.sku for item in items if not item.weighed]
    if not counted:
        return []
    count = min(50, max(5, len(items) // 2000))
    promotions: list[Promotion] = []
    for k in range(count):
        skus = list(dict.fromkeys(counted[(k * 7 + j * 13) % len(counted)] for j in range(5)))
        pid = f"PROMO-{k:03d}"
        match k % 5:
            case 0:
                promotions.append(PercentOff(promotion_id=pid, skus=skus, percent=Decimal(10)))
            case 1:
                promotions.append(AmountOff(promotion_id=pid, skus=skus, amount=Decimal("0.50")))
            case 2:
                promotions.append(BuyXGetY(promotion_id=pid, skus=skus, buy=2, get=1))
            case 3:
                promotions.append(
                    MixAndMatch(promotion_id=pid, skus=skus, quantity=3, price=Decimal("5.00"))
                )
            case _:
                promotions.append(
                    PercentOff(
                        promotion_id=pid,
                        skus=skus,
                        percent=Decimal(25),
                        description="last year's sale (expired)",
                        valid_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                        valid_to=dt.datetime(2020, 2, 1, tzinfo=dt.UTC),
                    )
                )
    return promotions


# -- faults ------------------------------------------------------------------------------------


class CatalogueFaultKind(enum.StrEnum):
    SERVER_ERROR = "server_error"
    """``status`` (500, 502 or 503) with an error body."""
    HANG = "hang"
    """Never answer: the request hangs until the client gives up or the server stops."""
    LATENCY = "latency"
    """Wait ``delay_s``, then answer normally."""
    CORRUPT = "corrupt"
    """Answer 200 with a delta that breaks the model (a price for an unknown SKU)."""


_SERVER_ERRORS: Final = {500: "INTERNAL_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE"}


class CatalogueFault(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: CatalogueFaultKind
    status: int = 500
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind is CatalogueFaultKind.SERVER_ERROR and self.status not in _SERVER_ERRORS:
            raise ValueError(f"server_error status must be one of {sorted(_SERVER_ERRORS)}")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError("delay_s must be a finite number >= 0")

    @classmethod
    def server_error(cls, status: int = 500) -> CatalogueFault:
        return cls(kind=CatalogueFaultKind.SERVER_ERROR, status=status)

    @classmethod
    def hang(cls) -> CatalogueFault:
        return cls(kind=CatalogueFaultKind.HANG)

    @classmethod
    def latency(cls, delay_s: float) -> CatalogueFault:
        return cls(kind=CatalogueFaultKind.LATENCY, delay_s=delay_s)

    @classmethod
    def corrupt(cls) -> CatalogueFault:
        return cls(kind=CatalogueFaultKind.CORRUPT)


# -- the simulator's state ---------------------------------------------------------------------

Op = Literal["upsert", "delete"]
Deleted = str | PriceRef
"""What a deletion keeps: the key, or for a price the fields of its key."""


@dataclass(frozen=True, slots=True)
class _Change:
    seq: int
    entity: Entity
    key: str
    op: Op
    record: msgspec.Struct | Deleted


@dataclass(slots=True)
class _Snapshot:
    name: str
    seq: int
    custom_fields: list[CustomField]
    tax_codes: list[TaxCode]
    items: list[Item]
    prices: dict[str, list[Price]]
    promotions: list[Promotion]


class QueryError(Exception):
    """An answer other than 200, with the API's error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    def body(self) -> bytes:
        return msgspec.json.encode({"error": {"code": self.code, "message": str(self)}})


@dataclass(slots=True)
class CatalogueStats:
    requests: Counter[str] = field(default_factory=Counter)
    """By endpoint: ``changes``, ``full``."""
    responses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    full_downloads: int = 0
    """Full downloads started (first pages served)."""


class HqCatalogueSimulator:
    """The cloud's catalogue (module docstring). Not thread-safe: use from one event loop."""

    def __init__(
        self,
        items: int = 0,
        *,
        seed: int = 0,
        token: str = DEFAULT_TOKEN,
        catalogue_id: str | None = None,
        max_snapshots: int = 4,
    ) -> None:
        self.token = token
        self.catalogue_id = catalogue_id or uuid.uuid4().hex[:12]
        self.max_snapshots = max_snapshots
        self.custom_fields: dict[str, CustomField] = {}
        self.tax_codes: dict[str, TaxCode] = {}
        self.items: dict[str, Item] = {}
        self.prices: dict[str, Price] = {}
        self.promotions: dict[str, Promotion] = {}
        self._owners: dict[str, str] = {}  # barcode -> SKU
        self.seq = 0
        self.horizon = 0
        """Cursors below this can no longer be served (the history was trimmed)."""
        self._history: list[_Change] = []
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._snapshot_names = itertools.count(1)
        self._script: list[CatalogueFault] = []
        self.stats = CatalogueStats()
        generated = generate_catalogue(items, seed=seed)
        self._seed(generated)

    def _seed(self, g: GeneratedCatalogue) -> None:
        self.custom_fields = {f.name: f for f in g.custom_fields}
        self.tax_codes = {t.code: t for t in g.tax_codes}
        self.items = {i.sku: i for i in g.items}
        self._owners = {code: i.sku for i in g.items for code in i.barcodes}
        self.prices = {p.key: p for p in g.prices}
        self.promotions = {p.promotion_id: p for p in g.promotions}

    # -- cursors -------------------------------------------------------------------------------

    @property
    def cursor(self) -> str:
        """The cursor of the current state."""
        return self._cursor(self.seq)

    def _cursor(self, seq: int) -> str:
        return f"{self.catalogue_id}.{seq}"

    def _parse_cursor(self, text: str) -> int:
        catalogue_id, _, seq = text.rpartition(".")
        if catalogue_id != self.catalogue_id or not seq.isdigit():
            raise QueryError(410, "CURSOR_EXPIRED", f"{text!r} is not a cursor of this catalogue")
        number = int(seq)
        if number < self.horizon or number > self.seq:
            raise QueryError(
                410,
                "CURSOR_EXPIRED",
                f"cursor {number} is outside the change history ({self.horizon}..{self.seq})",
            )
        return number

    # -- changing the catalogue (each method consistent, or ValueError and no change) ----------

    def _log(self, entity: Entity, key: str, op: Op, record: msgspec.Struct | Deleted) -> None:
        self.seq += 1
        self._history.append(_Change(self.seq, entity, key, op, record))

    def upsert_custom_field(self, custom_field: CustomField) -> None:
        self.custom_fields[custom_field.name] = custom_field
        self._log("custom_field", custom_field.name, "upsert", custom_field)

    def delete_custom_field(self, name: str) -> None:
        """The field and every item's value under it go (the hub strips the values itself)."""
        if self.custom_fields.pop(name, None) is None:
            raise ValueError(f"no custom field {name!r}")
        for sku, item in list(self.items.items()):
            if name in item.custom:
                custom = {k: v for k, v in item.custom.items() if k != name}
                self.items[sku] = msgspec.structs.replace(item, custom=custom)
        self._log("custom_field", name, "delete", name)

    def upsert_tax_code(self, tax_code: TaxCode) -> None:
        self.tax_codes[tax_code.code] = tax_code
        self._log("tax_code", tax_code.code, "upsert", tax_code)

    def upsert_item(self, item: Item, *, price: Decimal | str | None = None) -> None:
        """Add or replace ``item`` (whole: a custom value left out is gone), with a base price
        if given. A new item needs a price for the lanes to sell it, but the API allows none."""
        if item.tax_code not in self.tax_codes:
            raise ValueError(f"unknown tax code {item.tax_code!r}")
        for code in item.barcodes:
            owner = self._owners.get(code, item.sku)
            if owner != item.sku:
                raise ValueError(f"barcode {code!r} belongs to {owner!r}")
        unknown = set(item.custom) - set(self.custom_fields)
        if unknown:
            raise ValueError(f"custom fields {sorted(unknown)} are not defined")
        old = self.items.get(item.sku)
        for code in old.barcodes if old else ():
            self._owners.pop(code, None)
        self._owners.update((code, item.sku) for code in item.barcodes)
        self.items[item.sku] = item
        self._log("item", item.sku, "upsert", item)
        if price is not None:
            self.set_price(item.sku, price)

    def set_custom_value(self, sku: str, name: str, value: CustomValue | None) -> None:
        """Set one custom value of an item; ``None`` removes it from the item."""
        item = self._item(sku)
        custom = {k: v for k, v in item.custom.items() if k != name}
        if value is not None:
            custom[name] = value
        self.upsert_item(msgspec.structs.replace(item, custom=custom))

    def set_price(
        self,
        sku: str,
        amount: Decimal | str,
        *,
        level: str = BASE_PRICE_LEVEL,
        valid_from: dt.datetime | None = None,
        valid_to: dt.datetime | None = None,
    ) -> None:
        self._item(sku)
        price = Price(
            sku=sku, amount=Decimal(amount), level=level, valid_from=valid_from, valid_to=valid_to
        )
        self.prices[price.key] = price
        self._log("price", price.key, "upsert", price)

    def delete_price(
        self, sku: str, *, level: str = BASE_PRICE_LEVEL, valid_from: dt.datetime | None = None
    ) -> None:
        key = price_key(sku, level, valid_from)
        if self.prices.pop(key, None) is None:
            raise ValueError(f"no price {key!r}")
        self._log("price", key, "delete", PriceRef(sku=sku, level=level, valid_from=valid_from))

    def delete_item(self, sku: str) -> None:
        """The item goes with its prices; promotions naming it stop naming it (one naming only
        it is deleted); all of it before the item, so the history stays consistent."""
        item = self._item(sku)
        for pid, promotion in list(self.promotions.items()):
            if sku in promotion.skus:
                if len(promotion.skus) == 1:
                    self.delete_promotion(pid)
                else:
                    skus = [s for s in promotion.skus if s != sku]
                    self.upsert_promotion(msgspec.structs.replace(promotion, skus=skus))
        # The hub deletes an item's prices with it, but a page that collapses a price change
        # and the item's deletion (or its re-creation) must not carry the old price: each
        # price's last change is its deletion.
        for price in [p for p in self.prices.values() if p.sku == sku]:
            self.delete_price(sku, level=price.level, valid_from=price.valid_from)
        for code in item.barcodes:
            self._owners.pop(code, None)
        del self.items[sku]
        self._log("item", sku, "delete", sku)

    def upsert_promotion(self, promotion: Promotion) -> None:
        missing = [sku for sku in promotion.skus if sku not in self.items]
        if missing:
            raise ValueError(f"promotion {promotion.promotion_id} names unknown SKUs {missing}")
        self.promotions[promotion.promotion_id] = promotion
        self._log("promotion", promotion.promotion_id, "upsert", promotion)

    def delete_promotion(self, promotion_id: str) -> None:
        if self.promotions.pop(promotion_id, None) is None:
            raise ValueError(f"no promotion {promotion_id!r}")
        self._log("promotion", promotion_id, "delete", promotion_id)

    def expire_changes(self, upto: int | None = None) -> None:
        """Forget the history up to ``upto`` (default: all of it); older cursors get 410."""
        upto = self.seq if upto is None else min(upto, self.seq)
        cut = bisect.bisect_right(self._history, upto, key=lambda c: c.seq)
        del self._history[:cut]
        self.horizon = max(self.horizon, upto)

    def _item(self, sku: str) -> Item:
        item = self.items.get(sku)
        if item is None:
            raise ValueError(f"no item {sku!r}")
        return item

    # -- faults --------------------------------------------------------------------------------

    def script(self, *faults: CatalogueFault) -> None:
        """Append faults; each catalogue request takes the first one left."""
        self._script.extend(faults)

    def clear_script(self) -> None:
        self._script.clear()

    @property
    def scripted_faults(self) -> tuple[CatalogueFault, ...]:
        return tuple(self._script)

    def draw_fault(self) -> CatalogueFault | None:
        if not self._script:
            return None
        fault = self._script.pop(0)
        self.stats.faults[fault.kind.value] += 1
        return fault

    # -- the API's answers (pure: bytes out) ---------------------------------------------------

    def changes(self, cursor: str, limit: int, *, corrupt: bool = False) -> bytes:
        after = self._parse_cursor(cursor)
        start = bisect.bisect_right(self._history, after, key=lambda c: c.seq)
        page = self._history[start : start + limit]
        upto = page[-1].seq if page else self.seq
        more = start + limit < len(self._history)
        next_cursor = self._cursor(upto)
        latest: dict[tuple[Entity, str], _Change] = {}
        for change in page:
            latest.pop((change.entity, change.key), None)  # keep the order of the last change
            latest[(change.entity, change.key)] = change
        delta = _delta(f"hq-changes-{after}-{upto}", latest.values(), next_cursor)
        if corrupt:
            delta = _corrupted(delta)
        return msgspec.json.encode({"cursor": next_cursor, "more": more, "delta": delta})

    def full(self, limit: int, snapshot: str | None, page: int, *, corrupt: bool = False) -> bytes:
        if snapshot is None:
            if page != 0:
                raise QueryError(400, "INVALID_QUERY", "page needs snapshot")
            snap = self._take_snapshot()
            self.stats.full_downloads += 1
        else:
            found = self._snapshots.get(snapshot)
            if found is None:
                raise QueryError(410, "SNAPSHOT_EXPIRED", f"snapshot {snapshot!r} is gone")
            snap = found
        items = snap.items[page * limit : (page + 1) * limit]
        if page > 0 and not items:
            raise QueryError(400, "INVALID_QUERY", f"snapshot {snap.name} has no page {page}")
        more = (page + 1) * limit < len(snap.items)
        cursor = self._cursor(snap.seq)
        delta = Delta(
            delta_id=f"hq-full-{snap.name}-{page}",
            upstream_cursor=None if more else cursor,
            custom_fields=snap.custom_fields if page == 0 else [],
            tax_codes=snap.tax_codes if page == 0 else [],
            items=items,
            prices=[p for item in items for p in snap.prices.get(item.sku, ())],
            promotions=[] if more else snap.promotions,
        )
        if corrupt:
            delta = _corrupted(delta)
        return msgspec.json.encode(
            {"snapshot": snap.name, "page": page, "more": more, "cursor": cursor, "delta": delta}
        )

    def _take_snapshot(self) -> _Snapshot:
        prices: dict[str, list[Price]] = {}
        for price in self.prices.values():
            prices.setdefault(price.sku, []).append(price)
        snap = _Snapshot(
            name=f"s-{next(self._snapshot_names)}",
            seq=self.seq,
            custom_fields=list(self.custom_fields.values()),
            tax_codes=list(self.tax_codes.values()),
            items=[self.items[sku] for sku in sorted(self.items)],
            prices=prices,
            promotions=list(self.promotions.values()),
        )
        self._snapshots[snap.name] = snap
        while len(self._snapshots) > self.max_snapshots:
            self._snapshots.popitem(last=False)
        return snap

    def as_json(self) -> dict[str, Any]:
        return {
            "catalogue_id": self.catalogue_id,
            "cursor": self.cursor,
            "horizon": self.horizon,
            "history": len(self._history),
            "items": len(self.items),
            "prices": len(self.prices),
            "promotions": len(self.promotions),
            "requests": dict(self.stats.requests),
            "responses": {str(k): v for k, v in self.stats.responses.items()},
            "faults": dict(self.stats.faults),
            "full_downloads": self.stats.full_downloads,
            "scripted_faults": [msgspec.to_builtins(f) for f in self._script],
        }


def _delta(delta_id: str, changes: Iterable[_Change], cursor: str) -> Delta:
    upserts: dict[Entity, list[Any]] = {entity: [] for entity in ENTITIES}
    gone: dict[Entity, list[Any]] = {entity: [] for entity in ENTITIES}
    for change in changes:
        (upserts if change.op == "upsert" else gone)[change.entity].append(change.record)
    return Delta(
        delta_id=delta_id,
        upstream_cursor=cursor,
        custom_fields=upserts["custom_field"],
        tax_codes=upserts["tax_code"],
        items=upserts["item"],
        prices=upserts["price"],
        promotions=upserts["promotion"],
        deleted=Deletions(
            custom_fields=gone["custom_field"],
            tax_codes=gone["tax_code"],
            items=gone["item"],
            prices=gone["price"],
            promotions=gone["promotion"],
        ),
    )


def _corrupted(delta: Delta) -> Delta:
    bad = Price(sku="NO-SUCH-SKU-(corrupt)", amount=Decimal("1.00"))
    return msgspec.structs.replace(delta, prices=[*delta.prices, bad])


# -- the aiohttp shell -------------------------------------------------------------------------

SIM_KEY: Final = web.AppKey("hq_catalogue_sim", HqCatalogueSimulator)
_RELEASED_KEY: Final = web.AppKey("hq_catalogue_released", asyncio.Event)


def make_hq_catalogue_app(sim: HqCatalogueSimulator) -> web.Application:
    """The aiohttp application serving ``sim``; serve it with ``handler_cancellation=True`` (as
    :func:`run_hq_catalogue` does) so a client giving up on a hung request ends its handler."""
    app = web.Application()
    app[SIM_KEY] = sim
    app[_RELEASED_KEY] = asyncio.Event()
    app.on_shutdown.append(_release_hung_requests)
    app.router.add_get(CHANGES_PATH, _get_changes)
    app.router.add_get(FULL_PATH, _get_full)
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_post("/_sim/faults", _post_faults)
    return app


async def _release_hung_requests(app: web.Application) -> None:
    app[_RELEASED_KEY].set()


def _answer(sim: HqCatalogueSimulator, status: int, body: bytes) -> web.Response:
    sim.stats.responses[status] += 1
    return web.Response(status=status, body=body, content_type="application/json")


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise QueryError(400, "INVALID_QUERY", f"{name} must be an integer in {low}..{high}")
    return int(text)


async def _serve(request: web.Request, endpoint: str) -> web.Response:
    """Steps, in order: count; check the token (401); draw a fault and act on it; answer."""
    sim = request.app[SIM_KEY]
    sim.stats.requests[endpoint] += 1
    if request.headers.get("Authorization") != f"Bearer {sim.token}":
        return _answer(sim, 401, QueryError(401, "UNAUTHORIZED", "bad or no token").body())
    fault = sim.draw_fault()
    corrupt = False
    if fault is not None:
        match fault.kind:
            case CatalogueFaultKind.SERVER_ERROR:
                error = QueryError(fault.status, _SERVER_ERRORS[fault.status], "HQ failed (sim)")
                return _answer(sim, fault.status, error.body())
            case CatalogueFaultKind.HANG:
                await request.app[_RELEASED_KEY].wait()  # set only at shutdown
                return _answer(sim, 503, QueryError(503, "SHUTDOWN", "stopping").body())
            case CatalogueFaultKind.LATENCY:
                await asyncio.sleep(fault.delay_s)
            case CatalogueFaultKind.CORRUPT:
                corrupt = True
    try:
        limit = _int(request, "limit", 1000, 1, MAX_LIMIT)
        if endpoint == "changes":
            cursor = request.query.get("cursor")
            if not cursor:
                raise QueryError(400, "INVALID_QUERY", "cursor is required")
            body = sim.changes(cursor, limit, corrupt=corrupt)
        else:
            page = _int(request, "page", 0, 0, 10_000_000)
            body = sim.full(limit, request.query.get("snapshot"), page, corrupt=corrupt)
    except QueryError as error:
        return _answer(sim, error.status, error.body())
    return _answer(sim, 200, body)


async def _get_changes(request: web.Request) -> web.Response:
    return await _serve(request, "changes")


async def _get_full(request: web.Request) -> web.Response:
    return await _serve(request, "full")


async def _get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].as_json())


class _FaultControls(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    script: list[CatalogueFault] = []
    clear_script: bool = False


async def _post_faults(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    try:
        controls = msgspec.json.decode(await request.read(), type=_FaultControls)
    except (msgspec.DecodeError, ValueError) as exc:
        return web.Response(
            status=400, body=QueryError(400, "INVALID_CONTROLS", str(exc)).body(),
            content_type="application/json",
        )  # fmt: skip
    if controls.clear_script:
        sim.clear_script()
    sim.script(*controls.script)
    return web.json_response(sim.as_json())


@dataclass(frozen=True, slots=True)
class HqCatalogueServer:
    url: str
    """Base URL, e.g. ``http://127.0.0.1:41234`` (the source appends ``/catalogue/v1/...``)."""
    sim: HqCatalogueSimulator


@contextlib.asynccontextmanager
async def run_hq_catalogue(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sim: HqCatalogueSimulator | None = None,
    shutdown_timeout_s: float = 2.0,
) -> AsyncIterator[HqCatalogueServer]:
    """Serve a simulator on ``host:port`` (0: an ephemeral port) until the block ends."""
    sim = sim if sim is not None else HqCatalogueSimulator()
    runner = web.AppRunner(
        make_hq_catalogue_app(sim),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=shutdown_timeout_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        netloc = f"[{host}]" if ":" in host else host
        yield HqCatalogueServer(f"http://{netloc}:{bound}", sim)
    finally:
        await runner.cleanup()
