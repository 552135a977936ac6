"""The catalogue model: items, prices, promotions, tax codes, custom fields, and the delta that
carries them from the cloud. Pure: no I/O.

Theory of operation
-------------------
The cloud (the HQ catalogue API, or NetSuite through its connector) sends *deltas*: upserts of
whole records and deletions by key. A record is always sent whole; a field missing from an
upserted record is gone (that is how a custom-field value removed upstream disappears). The
store keeps every record as its canonical JSON (:func:`encode`) and hands those bytes to the
registers unchanged, so a register sees exactly what the hub validated.

Entities and their keys (the key is what the change feed and a tombstone carry):

==============  ==================================  ======================================
entity          key                                 notes
==============  ==================================  ======================================
``custom_field`` ``name``                           the configured custom fields
``tax_code``    ``code``                            rate as a fraction, included or added
``item``        ``sku``                             many barcodes; weighed items are in kg
``price``       ``sku|level|valid_from``            :func:`price_key`; valid_from in UTC
``promotion``   ``promotion_id``                    tagged by ``kind``
==============  ==================================  ======================================

Wire conventions (the same as the register protocol, ``edge.outbox.transactions``):

* **Decimals are JSON strings** (``"1.99"``, ``"0.2"``) and :class:`decimal.Decimal` in Python.
  msgspec would also take a JSON number or an exponent; :func:`check_delta` refuses what cannot
  be written back in plain notation (``NaN``, ``1E+2``) and more than 6 decimal places.
* **Times** are RFC 3339 with an offset. A validity window is half-open,
  ``valid_from <= at < valid_to``; a missing bound is open.
* **Tax rates** are fractions (``0.2`` is 20 %).
* **Unknown fields are refused** in every record: a misspelt ``amout`` must not load a price
  of nothing. Custom data goes in ``custom``, whose names must be configured (a
  ``custom_field`` record); values under names that are not configured are dropped when the item
  is stored (custom-field hygiene: a field taken off the list must not linger on the lanes).

:func:`check_delta` is the pure half of delta validation (everything that needs no other
records); the store adds the cross-record checks (does that SKU exist?) inside the transaction
that applies the delta, so a delta is either applied whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Final, Literal, TypeAlias

import msgspec

from edge.catalogue.errors import InvalidDelta

__all__ = [
    "BASE_PRICE_LEVEL",
    "ENTITIES",
    "AmountOff",
    "BuyXGetY",
    "CustomField",
    "CustomValue",
    "Deletions",
    "Delta",
    "Entity",
    "Item",
    "MixAndMatch",
    "PercentOff",
    "Prepared",
    "Price",
    "PriceRef",
    "Promotion",
    "PromotionKind",
    "TaxCode",
    "active_at",
    "check_delta",
    "decode_delta",
    "decode_record",
    "encode",
    "price_key",
    "select_price",
]

BASE_PRICE_LEVEL: Final = "base"
"""The level every item is expected to have; pricing falls back to it."""

Entity: TypeAlias = Literal["custom_field", "tax_code", "item", "price", "promotion"]
ENTITIES: Final[tuple[Entity, ...]] = ("custom_field", "tax_code", "item", "price", "promotion")
"""In dependency order: a record only refers to entities listed before it."""

MAX_PLACES: Final = 6

# --------------------------------------------------------------------------------------------
# Scalar types.
#
# The patterns below are enforced by msgspec while decoding, except in the two records that
# come by the million (Item, Price): there a regex per field cost about 4 µs per item, more than
# SQLite takes to store it, so those fields carry only length limits for msgspec and
# check_delta enforces the same patterns (SKU and barcodes directly, repetitive values such as
# tax codes and locales through a per-delta cache). The JSON Schema shows the pattern either way.

SKU_PATTERN: Final = r"^[^\s]{1,64}$"
BARCODE_PATTERN: Final = r"^[!-~]{1,64}$"
CODE_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,32}$"
FIELD_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
LOCALE_PATTERN: Final = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
UNIT_PATTERN: Final = r"^[a-z]{1,8}$"


def _checked(pattern: str, description: str) -> msgspec.Meta:
    return msgspec.Meta(pattern=pattern, description=description)


def _unchecked(pattern: str, low: int, high: int, description: str) -> msgspec.Meta:
    """Length only for msgspec; the pattern is check_delta's job (and the schema's text)."""
    return msgspec.Meta(
        min_length=low,
        max_length=high,
        description=description,
        extra_json_schema={"pattern": pattern},
    )


_SKU_TEXT: Final = "1-64 characters, no whitespace"
_CODE_TEXT: Final = "1-32 of A-Z a-z 0-9 . _ : -"
Sku = Annotated[str, _checked(SKU_PATTERN, _SKU_TEXT)]
Code = Annotated[str, _checked(CODE_PATTERN, _CODE_TEXT)]
FieldName = Annotated[str, _checked(FIELD_NAME_PATTERN, "a-z, then a-z 0-9 _; up to 64")]
HotSku = Annotated[str, _unchecked(SKU_PATTERN, 1, 64, _SKU_TEXT)]
HotBarcode = Annotated[str, _unchecked(BARCODE_PATTERN, 1, 64, "1-64 printable ASCII, no space")]
HotCode = Annotated[str, _unchecked(CODE_PATTERN, 1, 32, _CODE_TEXT)]
HotFieldName = Annotated[str, _unchecked(FIELD_NAME_PATTERN, 1, 64, "a configured field name")]
HotLocale = Annotated[str, _unchecked(LOCALE_PATTERN, 2, 35, "BCP 47 style: en, fr-CA")]
HotUnit = Annotated[str, _unchecked(UNIT_PATTERN, 1, 8, "each, kg, l, m, …")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]
PromotionId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
CustomValue: TypeAlias = str | int | float | bool | None
"""A custom field's value: a JSON scalar (custom fields are shown, never priced)."""


class _Record(
    msgspec.Struct,
    forbid_unknown_fields=True,
    kw_only=True,
    frozen=True,
    omit_defaults=True,
    gc=False,  # records hold no cycles; a million of them must not slow the collector down
):
    pass


# --------------------------------------------------------------------------------------------
# Records.


class CustomField(_Record, frozen=True):
    """A configured custom field. Items may carry values only under configured names."""

    name: FieldName
    label: Text
    type: Literal["string", "number", "boolean"] = "string"


class TaxCode(_Record, frozen=True):
    code: Code
    rate: Decimal
    """A fraction: 0.2 is 20 %."""
    included: bool = False
    """True: shelf prices include this tax (VAT style); False: it is added on top (sales tax)."""
    description: Text | None = None


class Item(_Record, frozen=True):
    sku: HotSku
    names: Annotated[dict[HotLocale, Text], msgspec.Meta(min_length=1, max_length=20)]
    """By locale; the first one is the default (receipts, explanations)."""
    tax_code: HotCode
    barcodes: Annotated[list[HotBarcode], msgspec.Meta(max_length=50)] = []
    unit: HotUnit = "each"
    weighed: bool = False
    """Sold by weight: a basket quantity is a weight in kg (and ``unit`` must be ``kg``)."""
    department: HotCode | None = None
    age_restriction: Annotated[int, msgspec.Meta(ge=1, le=99)] | None = None
    """Minimum age of the buyer, if any (the register asks)."""
    custom: dict[HotFieldName, CustomValue] = {}

    @property
    def name(self) -> str:
        return next(iter(self.names.values()))


class Price(_Record, frozen=True):
    """One price of one item at one level, valid in ``[valid_from, valid_to)``.

    Several prices of the same item and level may overlap in time: the one that started last
    wins (:func:`select_price`), so a week's special needs no change to the regular price.
    """

    sku: HotSku
    """Must name an item: checked by the store (so no pattern check is needed here)."""
    amount: Decimal
    """Per unit, or per kg for a weighed item; up to 6 decimal places."""
    level: HotCode = BASE_PRICE_LEVEL
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None

    @property
    def key(self) -> str:
        return price_key(self.sku, self.level, self.valid_from)


class PriceRef(_Record, frozen=True):
    """Names a price to delete (the same fields that make its key)."""

    sku: Sku
    level: Code = BASE_PRICE_LEVEL
    valid_from: Timestamp | None = None

    @property
    def key(self) -> str:
        return price_key(self.sku, self.level, self.valid_from)


class _Promotion(_Record, frozen=True, tag_field="kind"):
    promotion_id: PromotionId
    skus: Annotated[list[Sku], msgspec.Meta(min_length=1, max_length=10_000)]
    """The eligible items; for buy-x-get-y and mix-and-match, any mix of them counts."""
    description: Text | None = None
    valid_from: Timestamp | None = None
    valid_to: Timestamp | None = None
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = 0
    """Higher first; see :mod:`edge.catalogue.pricing` for the precedence."""
    stackable: bool = False
    """True: applies on top of other promotions. False (exclusive): a unit gets at most one
    exclusive promotion."""


class PercentOff(_Promotion, frozen=True, kw_only=True, tag="percent_off"):
    percent: Decimal
    """0 < percent <= 100."""


class AmountOff(_Promotion, frozen=True, kw_only=True, tag="amount_off"):
    amount: Decimal
    """Off each unit (a weighed line counts as one unit), never below zero."""


class BuyXGetY(_Promotion, frozen=True, kw_only=True, tag="buy_x_get_y"):
    buy: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    get: Annotated[int, msgspec.Meta(ge=1, le=1000)]
    get_percent: Decimal = Decimal(100)
    """How much off the ``get`` units: 100 is free, 50 is half price."""


class MixAndMatch(_Promotion, frozen=True, kw_only=True, tag="mix_and_match"):
    """A threshold over any mix of the eligible items, in one of two forms:

    * ``quantity`` + ``price``: any ``quantity`` units for ``price`` ("3 for 10.00");
    * ``spend`` + ``amount_off``: spend at least ``spend`` on them, get ``amount_off`` off,
      once per basket ("spend 50, get 5 off").
    """

    quantity: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    price: Decimal | None = None
    spend: Decimal | None = None
    amount_off: Decimal | None = None


Promotion: TypeAlias = PercentOff | AmountOff | BuyXGetY | MixAndMatch
PromotionKind: TypeAlias = Literal["percent_off", "amount_off", "buy_x_get_y", "mix_and_match"]


class Deletions(_Record, frozen=True):
    custom_fields: list[FieldName] = []
    tax_codes: list[Code] = []
    items: list[Sku] = []
    """Deleting an item also deletes its prices and barcodes (each with its own tombstone)."""
    prices: list[PriceRef] = []
    promotions: list[PromotionId] = []


class Delta(_Record, frozen=True):
    """One batch of changes from the cloud, applied atomically."""

    delta_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    """The cloud's name for it: quoted in the quarantine and the logs."""
    upstream_cursor: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    """The cloud's position after this delta; stored with it in the same transaction, so the
    downsync resumes from exactly what was applied."""
    custom_fields: list[CustomField] = []
    tax_codes: list[TaxCode] = []
    items: list[Item] = []
    prices: list[Price] = []
    promotions: list[Promotion] = []
    deleted: Deletions = Deletions()

    @property
    def has_deletions(self) -> bool:
        d = self.deleted
        return bool(d.custom_fields or d.tax_codes or d.items or d.prices or d.promotions)


# --------------------------------------------------------------------------------------------
# Encoding.

# Deterministic: dict keys sorted, so the same record always has the same bytes and an
# unchanged record is recognised (and not sent to every register again).
_encoder: Final = msgspec.json.Encoder(order="deterministic")
_delta_decoder: Final = msgspec.json.Decoder(Delta)
_record_types: Final[dict[Entity, type]] = {
    "custom_field": CustomField,
    "tax_code": TaxCode,
    "item": Item,
    "price": Price,
    "promotion": Promotion,  # type: ignore[dict-item]
}
_record_decoders: Final[dict[Entity, msgspec.json.Decoder[object]]] = {
    entity: msgspec.json.Decoder(kind) for entity, kind in _record_types.items()
}


encode: Final[Callable[[msgspec.Struct], bytes]] = _encoder.encode
"""Canonical JSON of a record (what the store keeps and the registers receive)."""


def decode_delta(data: bytes) -> Delta:
    """Parse a delta from the wire; a type error becomes :class:`InvalidDelta` with its path."""
    try:
        return _delta_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidDelta(f"malformed delta: {exc}") from exc


def decode_record(entity: Entity, data: bytes) -> object:
    """Parse one stored record (the store's own canonical JSON)."""
    return _record_decoders[entity].decode(data)


def price_key(sku: str, level: str, valid_from: dt.datetime | None) -> str:
    """``sku|level|valid_from`` with the time in UTC (``Z``), or empty for an open start.

    A level and a time cannot contain ``|``, so the key splits back unambiguously from the
    right (``key.rsplit("|", 2)``) even if the SKU does; two spellings of the same instant make
    the same key.
    """
    start = "" if valid_from is None else _utc(valid_from)
    return f"{sku}|{level}|{start}"


def _utc(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Time rules (shared by the store, the in-memory view and pricing, so every lane agrees).


def active_at(
    valid_from: dt.datetime | None, valid_to: dt.datetime | None, at: dt.datetime
) -> bool:
    """The half-open window ``[valid_from, valid_to)``; a missing bound is open."""
    return (valid_from is None or valid_from <= at) and (valid_to is None or at < valid_to)


def select_price(prices: Iterable[Price], level: str, at: dt.datetime) -> Price | None:
    """The price of ``level`` in force at ``at``: of those whose window holds ``at``, the one
    that started last (an open start counts as the earliest)."""
    best: Price | None = None
    for price in prices:
        if price.level != level or not active_at(price.valid_from, price.valid_to, at):
            continue
        if best is None or _start(price) > _start(best):
            best = price
    return best


_EPOCH: Final = dt.datetime.min.replace(tzinfo=dt.UTC)


def _start(price: Price) -> dt.datetime:
    return _EPOCH if price.valid_from is None else price.valid_from


# --------------------------------------------------------------------------------------------
# Validation (the pure half).


@dataclass(frozen=True, slots=True)
class Prepared:
    """A delta that passed :func:`check_delta`: items are as they will be stored."""

    items: list[Item]
    price_keys: list[str]
    """The key of each price, in order."""
    stripped: int
    """Custom-field values dropped because their name is not configured."""


_WHITESPACE: Final = re.compile(r"\s")
_NOT_BARCODE: Final = re.compile(r"[^!-~]")
_PLAIN_AMOUNT: Final = r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,6})?"
# str() of a Decimal is plain notation exactly when it needs no exponent; NaN, Infinity,
# 1E+2, a sign and a seventh decimal place all fail this.
_PLAIN_AMOUNTS: Final = re.compile(rf"{_PLAIN_AMOUNT}(?:,{_PLAIN_AMOUNT})*")


def _decimal_problem(
    value: Decimal, *, positive: bool = False, maximum: Decimal | None = None
) -> str | None:
    if not value.is_finite():
        return f"{value} is not a number"
    sign, _, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent > 0:
        return f"{value} is not in plain notation"
    if -exponent > MAX_PLACES:
        return f"{value} has more than {MAX_PLACES} decimal places"
    if sign or (positive and not value):
        return f"{value} must be {'greater than' if positive else 'at least'} 0"
    if maximum is not None and value > maximum:
        return f"{value} is more than {maximum}"
    return None


_HUNDRED: Final = Decimal(100)
_TYPE_CHECKS: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
}


def _window_problem(valid_from: dt.datetime | None, valid_to: dt.datetime | None) -> str | None:
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        return "valid_to must be after valid_from"
    return None


def _duplicates(keys: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for key in keys:
        if key in seen:
            dups.append(key)
        seen.add(key)
    return dups


def _promotion_problem(promotion: Promotion) -> str | None:
    problem = _window_problem(promotion.valid_from, promotion.valid_to)
    if problem:
        return problem
    if _duplicates(promotion.skus):
        return f"SKU {_duplicates(promotion.skus)[0]!r} listed twice"
    match promotion:
        case PercentOff(percent=percent):
            return _decimal_problem(percent, positive=True, maximum=_HUNDRED)
        case AmountOff(amount=amount):
            return _decimal_problem(amount, positive=True)
        case BuyXGetY(get_percent=get_percent):
            return _decimal_problem(get_percent, positive=True, maximum=_HUNDRED)
        case MixAndMatch(quantity=quantity, price=price, spend=spend, amount_off=amount_off):
            by_quantity = (quantity, price) != (None, None)
            by_spend = (spend, amount_off) != (None, None)
            # Exactly one form, complete: a stray ``spend`` next to ``quantity`` + ``price``
            # would otherwise be silently ignored.
            if (
                by_quantity == by_spend
                or (quantity is None) != (price is None)
                or (spend is None) != (amount_off is None)
            ):
                return "needs exactly one of quantity+price or spend+amount_off"
            if price is not None:
                return _decimal_problem(price)
            assert spend is not None
            assert amount_off is not None
            return _decimal_problem(spend, positive=True) or _decimal_problem(
                amount_off, positive=True
            )


def check_delta(
    delta: Delta,
    *,
    custom_fields: Mapping[str, CustomField],
    allow_deletions: bool = True,
) -> Prepared:
    """Check everything about ``delta`` that needs no other record; strip custom-field values
    whose name is not in ``custom_fields`` (the configuration in force once this delta is
    applied). Raises :class:`InvalidDelta` listing up to ten problems.

    Calling contract: cheap enough for a million items. The common case (nothing wrong) is a
    handful of C-speed passes (comprehensions, one regex over joined strings); only when one
    of them fails does a slower pass find and name the culprit.
    """
    problems: list[str] = []

    def problem(where: str, what: str) -> None:
        problems.append(f"{where}: {what}")

    deleted = delta.deleted
    items = delta.items
    prices = delta.prices
    skus = [item.sku for item in items]
    # Inlined price_key(): most prices have an open start.
    price_keys = [
        f"{p.sku}|{p.level}|" if p.valid_from is None else price_key(p.sku, p.level, p.valid_from)
        for p in prices
    ]

    if not allow_deletions and delta.has_deletions:
        problem("deleted", "a full load lists what exists; it cannot delete")
    for entity, keys in (
        ("custom_fields", [f.name for f in delta.custom_fields]),
        ("tax_codes", [t.code for t in delta.tax_codes]),
        ("items", skus),
        ("prices", price_keys),
        ("promotions", [p.promotion_id for p in delta.promotions]),
    ):
        if len(set(keys)) != len(keys):
            for dup in _duplicates(keys)[:3]:
                problem(entity, f"{dup!r} appears twice")
        gone = getattr(deleted, entity)
        if gone:
            gone_keys = {g.key if isinstance(g, PriceRef) else g for g in gone}
            for both in sorted(gone_keys.intersection(keys))[:3]:
                problem(entity, f"{both!r} is both upserted and deleted")

    for i, tax in enumerate(delta.tax_codes):
        why = _decimal_problem(tax.rate, maximum=Decimal(10))
        if why:
            problem(f"tax_codes[{i}] ({tax.code})", f"rate {why}")

    # Items: the patterns msgspec leaves to us (see "Scalar types"). A separator that the
    # pattern allows cannot hide a bad character in the joined string.
    if _WHITESPACE.search("!".join(skus)):
        for sku in skus:
            if _WHITESPACE.search(sku):
                problem("items", f"SKU {sku!r} contains whitespace")
    for what, pattern, values in (
        ("tax code", CODE_PATTERN, {item.tax_code for item in items}),
        ("department", CODE_PATTERN, {i.department for i in items if i.department is not None}),
        ("unit", UNIT_PATTERN, {item.unit for item in items}),
        ("locale", LOCALE_PATTERN, {locale for item in items for locale in item.names}),
        ("price level", CODE_PATTERN, {price.level for price in prices}),
    ):
        fullmatch = re.compile(pattern).fullmatch
        for bad in sorted(v for v in values if fullmatch(v) is None)[:3]:
            problem("items" if what != "price level" else "prices", f"{what} {bad!r} is invalid")
    for item in (i for i in items if i.weighed and i.unit != "kg"):
        problem(f"items ({item.sku})", "a weighed item must have unit 'kg'")
    codes = [code for item in items for code in item.barcodes]
    if _NOT_BARCODE.search("!".join(codes)) or len(set(codes)) != len(codes):
        owners: dict[str, str] = {}
        for item in items:
            for code in item.barcodes:
                if _NOT_BARCODE.search(code):
                    problem(f"items ({item.sku})", f"barcode {code!r} is not printable ASCII")
                if code in owners:
                    problem(f"items ({item.sku})", f"barcode {code!r} is also on {owners[code]!r}")
                owners[code] = item.sku

    # Custom-field hygiene: drop values under names that are not configured.
    stripped = 0
    if any(item.custom for item in items):
        cleaned: list[Item] = []
        for item in items:
            if item.custom:
                kept: dict[str, CustomValue] = {}
                for name, value in item.custom.items():
                    spec = custom_fields.get(name)
                    if spec is None:
                        stripped += 1
                    elif value is not None and (
                        not isinstance(value, _TYPE_CHECKS[spec.type])
                        or (spec.type == "number" and isinstance(value, bool))
                    ):
                        problem(
                            f"items ({item.sku})",
                            f"custom field {name!r} must be a {spec.type}, not {value!r}",
                        )
                    else:
                        kept[name] = value
                if len(kept) != len(item.custom):
                    item = msgspec.structs.replace(item, custom=kept)
            cleaned.append(item)
        items = cleaned

    # Prices: amounts in plain notation, checked at C speed over the distinct amounts.
    amounts = {price.amount for price in prices}
    if amounts and not _PLAIN_AMOUNTS.fullmatch(",".join(map(str, amounts))):
        for amount in sorted((a for a in amounts if _decimal_problem(a)), key=str)[:3]:
            problem("prices", f"amount {_decimal_problem(amount)}")
    for price in prices:
        if price.valid_from is not None or price.valid_to is not None:
            why = _window_problem(price.valid_from, price.valid_to)
            if why:
                problem(f"prices ({price.key})", why)
    deleted_items = set(deleted.items)
    if deleted_items:
        for price in prices:
            if price.sku in deleted_items:
                problem(f"prices ({price.key})", "its item is deleted by the same delta")

    for i, promotion in enumerate(delta.promotions):
        where = f"promotions[{i}] ({promotion.promotion_id})"
        why = _promotion_problem(promotion)
        if why:
            problem(where, why)
        for sku in promotion.skus:
            if sku in deleted_items:
                problem(where, f"names SKU {sku!r}, deleted by the same delta")

    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise InvalidDelta("; ".join(problems[:10]) + more, delta_id=delta.delta_id)
    return Prepared(items=items, price_keys=price_keys, stripped=stripped)
