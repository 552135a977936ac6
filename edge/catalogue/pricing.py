"""Basket pricing: one pure function, identical on every lane. No I/O; the time comes in as
``at``.

Theory of operation
-------------------
:func:`price_basket` prices a basket against a :class:`~edge.catalogue.view.CatalogueView` (one
consistent catalogue version) at a time ``at``, in five steps. Every rounding is to the
currency's minor unit (the cent), **half-up**.

1. **Lines.** Each line's item, its unit price at ``at`` (the basket's price level, falling
   back to the ``base`` level when the item has no price at that level) and its tax code. A
   counted item's quantity must be a whole number; a weighed item's quantity is its weight in
   kg. The line's *amount* is ``quantity × unit price``, rounded half-up (0.455 kg at
   3.99/kg = 1.815 45 → 1.82).

2. **Exclusive promotions** (``stackable: false``) compete for units; a unit gets at most one
   of them (no double counting), and the units that *trigger* a promotion (the paid "buy"
   units of a buy-x-get-y, the units of a "3 for 10" bundle, every eligible unit of a spend
   threshold) are used up by it as well as the discounted ones. Higher ``priority`` goes first.
   Within one priority the choice is **best for the customer**, greedily: every candidate is
   evaluated on the units still free, the one saving the most is applied (ties: lowest
   ``promotion_id``), and the rest are evaluated again on what is left, until none saves
   anything. Each promotion applies at most once per basket (a buy-x-get-y or an "N for P"
   repeats over as many complete groups as the basket holds; a spend threshold gives its
   amount once).

3. **Stackable promotions** (``stackable: true``) then apply on top, one after the other
   (priority descending, then ``promotion_id``), each to the lines' amounts *after* every
   discount so far: 10 % then a stackable 5 % is 14.5 % off, never 15 %.

4. **Tax**, per line, on the line's net amount (amount − its discounts), rounded half-up per
   line: added tax is ``net × rate``; included tax (VAT-style shelf prices) is the part of the
   net that is tax, ``net × rate / (1 + rate)``. A line's total is ``net + tax`` when the tax is
   added and ``net`` when it is included.

5. **Totals** are sums of the lines' figures, so the line totals always add up to the basket
   total: ``total = subtotal − discount_total + added tax``.

How each kind computes its discount (values are the units' prices in step 2 and their
current net values in step 3):

* ``percent_off``: ``percent`` of each eligible line's value, rounded per line.
* ``amount_off``: ``amount`` off each eligible unit (a weighed line is one unit), never more
  than the line's value.
* ``buy_x_get_y``: counted units only. The eligible units, most expensive first, are cut into
  groups of ``buy + get``; in each complete group the ``get`` cheapest units get
  ``get_percent`` off (100: free). Grouping from the top gives the customer the most under the
  usual "the free one is the cheaper one" rule.
* ``mix_and_match`` with ``quantity``/``price``: counted units only, most expensive first, in
  groups of ``quantity``; each complete group costs ``price`` when that is less than the units'
  own total. With ``spend``/``amount_off``: when the eligible lines' value reaches ``spend``,
  ``amount_off`` (at most that value) comes off once.

A promotion's discount that covers several lines (buy-x-get-y, mix-and-match) is computed
exactly, rounded half-up once, and spread over its lines in proportion to their share, cent by
cent by largest remainder (ties to the line that sorts first), so the per-line amounts add up to
the promotion's total. No discount takes a line below zero.

The result is independent of the order of the lines: lines are priced in a canonical order
(SKU, then quantity), and lines equal in both are interchangeable. The explanation names, for
every line, each promotion that applied and for how much, lists each applied promotion with its
lines, and says why an active promotion did not apply.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Annotated, Final, Literal

import msgspec

from edge.catalogue.errors import InvalidBasket, NoPrice, UnknownSku
from edge.catalogue.model import (
    BASE_PRICE_LEVEL,
    AmountOff,
    BuyXGetY,
    MixAndMatch,
    PercentOff,
    Promotion,
    PromotionKind,
)
from edge.catalogue.view import CatalogueView

__all__ = [
    "BasketLine",
    "LineDiscount",
    "LineShare",
    "PricedBasket",
    "PricedLine",
    "PromotionApplied",
    "PromotionNotApplied",
    "price_basket",
    "round_half_up",
]

ZERO: Final = Decimal(0)
HUNDRED: Final = Decimal(100)
MAX_LINES: Final = 1000
MAX_PLACES: Final = 6


class _Wire(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class BasketLine(_Wire, frozen=True):
    """One line of a basket to price."""

    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    quantity: Decimal
    """A whole number of units, or for a weighed item its weight in kg."""
    line_no: Annotated[int, msgspec.Meta(ge=1, le=9999)] | None = None
    """The register's line number; None: the line's position (1-based)."""


class LineDiscount(_Wire, frozen=True):
    promotion_id: str
    kind: PromotionKind
    amount: Decimal


class PricedLine(_Wire, frozen=True):
    line_no: int
    sku: str
    name: str
    quantity: Decimal
    weighed: bool
    unit_price: Decimal
    price_level: str
    """The level the unit price came from (the basket's level, or ``base`` as a fallback)."""
    amount: Decimal
    """quantity × unit_price, rounded half-up; before discounts."""
    discounts: list[LineDiscount]
    discount_total: Decimal
    net: Decimal
    """amount − discount_total."""
    tax_code: str
    tax_rate: Decimal
    tax_included: bool
    tax: Decimal
    total: Decimal
    """net + tax when tax is added; net when it is included."""
    age_restriction: int | None = None


class LineShare(_Wire, frozen=True):
    line_no: int
    amount: Decimal


class PromotionApplied(_Wire, frozen=True):
    promotion_id: str
    kind: PromotionKind
    stackable: bool
    amount: Decimal
    lines: list[LineShare]
    description: str | None = None


class PromotionNotApplied(_Wire, frozen=True):
    promotion_id: str
    kind: PromotionKind
    reason: str


class PricedBasket(_Wire, frozen=True):
    at: dt.datetime
    version: int
    """The catalogue version the basket was priced against."""
    price_level: str
    lines: list[PricedLine]
    subtotal: Decimal
    discount_total: Decimal
    tax_total: Decimal
    """Included and added tax together."""
    total: Decimal
    applied: list[PromotionApplied]
    not_applied: list[PromotionNotApplied]


def round_half_up(value: Decimal, quantum: Decimal) -> Decimal:
    return value.quantize(quantum, rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------------------------
# Working state.


@dataclass(slots=True)
class _Line:
    index: int
    """Position in the canonical order (the tie-breaker everywhere)."""
    line_no: int
    sku: str
    quantity: Decimal
    units: int | None
    """Counted units; None for a weighed line (one unit for amount_off, none for groups)."""
    unit_price: Decimal
    amount: Decimal
    claimed: int = 0
    """Units used by an exclusive promotion."""
    discounts: list[tuple[Promotion, Decimal]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return 1 if self.units is None else self.units

    @property
    def net(self) -> Decimal:
        return self.amount - sum((d for _, d in self.discounts), ZERO)


@dataclass(frozen=True, slots=True)
class _Slot:
    """What one line offers to the promotion being evaluated."""

    line: _Line
    units: int
    value: Decimal
    """The value of those units (cents)."""
    unit_value: Decimal
    """The value of one of them, exact (may have more places than a cent)."""

    @property
    def counted(self) -> bool:
        return self.line.units is not None


@dataclass(slots=True)
class _Effect:
    shares: dict[int, Decimal] = field(default_factory=dict)
    """Line index → exact discount."""
    used: dict[int, int] = field(default_factory=dict)
    """Line index → units used (exclusive promotions claim them)."""
    per_line_rounding: bool = True
    final: dict[int, Decimal] = field(default_factory=dict)
    """Line index → discount in cents, after rounding and caps."""

    @property
    def total(self) -> Decimal:
        return sum(self.final.values(), ZERO)


Mode = Literal["exclusive", "stackable"]


class _Pricer:
    def __init__(self, lines: list[_Line], quantum: Decimal) -> None:
        self.lines = lines
        self.quantum = quantum

    def round(self, value: Decimal) -> Decimal:
        return round_half_up(value, self.quantum)

    # -- slots -------------------------------------------------------------------------------

    def slots(self, promotion: Promotion, mode: Mode) -> list[_Slot]:
        eligible = set(promotion.skus)
        slots: list[_Slot] = []
        for line in self.lines:
            if line.sku not in eligible:
                continue
            if mode == "exclusive":
                units = line.count - line.claimed
                if units <= 0:
                    continue
                # All of a line's units are worth its amount; some of them, their price.
                whole = units == line.count
                value = line.amount if whole else self.round(line.unit_price * units)
                unit_value = line.unit_price if line.units is not None else value
            else:
                units = line.count
                value = line.net
                unit_value = value / units
            if value > 0:
                slots.append(_Slot(line, units, value, unit_value))
        return slots

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, promotion: Promotion, mode: Mode) -> _Effect:
        slots = self.slots(promotion, mode)
        effect = _Effect()
        match promotion:
            case PercentOff(percent=percent):
                for slot in slots:
                    effect.shares[slot.line.index] = slot.value * percent / HUNDRED
                    effect.used[slot.line.index] = slot.units
            case AmountOff(amount=amount):
                for slot in slots:
                    effect.shares[slot.line.index] = min(amount * slot.units, slot.value)
                    effect.used[slot.line.index] = slot.units
            case BuyXGetY():
                effect.per_line_rounding = False
                _buy_x_get_y(promotion, [s for s in slots if s.counted], effect)
            case MixAndMatch(quantity=int(quantity), price=Decimal() as price):
                effect.per_line_rounding = False
                _n_for_price(quantity, price, [s for s in slots if s.counted], effect)
            case MixAndMatch(spend=Decimal() as spend, amount_off=Decimal() as amount_off):
                effect.per_line_rounding = False
                value = sum((s.value for s in slots), ZERO)
                if value >= spend:
                    off = min(amount_off, value)
                    for slot in slots:
                        effect.shares[slot.line.index] = off * slot.value / value
                        effect.used[slot.line.index] = slot.units
            case _:  # pragma: no cover - check_delta guarantees one of the forms
                pass
        self._finalise(effect, mode)
        return effect

    def _finalise(self, effect: _Effect, mode: Mode) -> None:
        if effect.per_line_rounding:
            rounded = {i: self.round(share) for i, share in effect.shares.items()}
        else:
            rounded = _largest_remainder(effect.shares, self.quantum)
        for index, amount in rounded.items():
            line = self.lines[index]
            # A discount never takes a line below zero (exclusive discounts are computed on
            # units no one else has discounted, so the cap only bites on rounding).
            capped = min(amount, line.net)
            if capped > 0:
                effect.final[index] = capped

    def apply(self, promotion: Promotion, effect: _Effect, mode: Mode) -> None:
        for index, amount in effect.final.items():
            self.lines[index].discounts.append((promotion, amount))
        if mode == "exclusive":
            for index, units in effect.used.items():
                self.lines[index].claimed += units


def _largest_remainder(shares: dict[int, Decimal], quantum: Decimal) -> dict[int, Decimal]:
    """Round the total of ``shares`` half-up once and spread it in cents: each share rounded
    down, the cents left over to the largest remainders (ties: lowest line index)."""
    if not shares:
        return {}
    total = round_half_up(sum(shares.values(), ZERO), quantum)
    floors = {i: s.quantize(quantum, rounding=ROUND_DOWN) for i, s in shares.items()}
    left = int((total - sum(floors.values(), ZERO)) / quantum)
    for index in sorted(shares, key=lambda i: (floors[i] - shares[i], i))[: max(left, 0)]:
        floors[index] += quantum
    return floors


@dataclass(slots=True)
class _Run:
    """The units of one line, in the order groups are formed."""

    unit_value: Decimal
    slot: _Slot
    left: int


def _runs(slots: list[_Slot]) -> list[_Run]:
    """Counted units grouped by line, most valuable first (ties: canonical line order)."""
    ordered = sorted(slots, key=lambda s: (-s.unit_value, s.line.index))
    return [_Run(s.unit_value, s, s.units) for s in ordered]


def _buy_x_get_y(promotion: BuyXGetY, slots: list[_Slot], effect: _Effect) -> None:
    size = promotion.buy + promotion.get
    total_units = sum(s.units for s in slots)
    end = (total_units // size) * size  # units in complete groups

    def free_before(position: int) -> int:
        """How many of the first ``position`` units (in order) are 'get' units."""
        return (position // size) * promotion.get + max(0, position % size - promotion.buy)

    start = 0
    for run in _runs(slots):
        stop = min(start + run.left, end)
        if stop <= start:
            break
        free = free_before(stop) - free_before(start)
        index = run.slot.line.index
        effect.used[index] = stop - start
        if free:
            effect.shares[index] = run.unit_value * free * promotion.get_percent / HUNDRED
        start += run.left


def _n_for_price(quantity: int, price: Decimal, slots: list[_Slot], effect: _Effect) -> None:
    """Groups of ``quantity`` units, most valuable first, each for ``price`` while that saves
    (group worths only fall, so the first group that saves nothing ends it)."""
    runs = _runs(slots)

    def take(run: _Run, units: int, share: Decimal) -> None:
        index = run.slot.line.index
        effect.used[index] = effect.used.get(index, 0) + units
        if share:
            effect.shares[index] = effect.shares.get(index, ZERO) + share
        run.left -= units

    position = 0
    while position < len(runs):
        run = runs[position]
        whole = run.left // quantity
        if whole:
            # Groups entirely inside one line are identical: take them all at once.
            saving = run.unit_value * quantity - price
            if saving <= 0:
                return
            take(run, whole * quantity, saving * whole)
        else:
            # One group spanning this line and the next ones.
            parts: list[tuple[_Run, int]] = []
            need = quantity
            for later in runs[position:]:
                units = min(need, later.left)
                parts.append((later, units))
                need -= units
                if not need:
                    break
            if need:
                return  # not a complete group
            worth = sum((r.unit_value * units for r, units in parts), ZERO)
            saving = worth - price
            if saving <= 0:
                return
            for later, units in parts:
                take(later, units, saving * later.unit_value * units / worth)
        while position < len(runs) and runs[position].left == 0:
            position += 1


# --------------------------------------------------------------------------------------------
# Explanations of what did not apply.


def _unmet_reason(promotion: Promotion, pricer: _Pricer, mode: Mode) -> str:
    slots = pricer.slots(promotion, mode)
    counted = sum(s.units for s in slots if s.counted)
    match promotion:
        case BuyXGetY(buy=buy, get=get) if counted < buy + get:
            return f"needs {buy + get} eligible units, the basket has {counted}"
        case MixAndMatch(quantity=int(quantity), price=Decimal() as price):
            if counted < quantity:
                return f"needs {quantity} eligible units, the basket has {counted}"
            return f"{quantity} eligible units already cost no more than {price}"
        case MixAndMatch(spend=Decimal() as spend):
            value = sum((s.value for s in slots), ZERO)
            return f"needs a spend of {spend} on eligible items, the basket has {value}"
    return "no eligible units left to discount"


# --------------------------------------------------------------------------------------------
# The function.


def _order(promotion: Promotion) -> tuple[int, str]:
    return (-promotion.priority, promotion.promotion_id)


def price_basket(
    view: CatalogueView,
    lines: Sequence[BasketLine],
    at: dt.datetime,
    *,
    price_level: str = BASE_PRICE_LEVEL,
    currency_digits: int = 2,
) -> PricedBasket:
    """Price ``lines`` against ``view`` at ``at`` (see the module docstring for the rules).

    Raises :class:`~edge.catalogue.errors.UnknownSku`, :class:`~edge.catalogue.errors.NoPrice`
    or :class:`~edge.catalogue.errors.InvalidBasket`.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidBasket("the pricing time must carry a UTC offset")
    if len(lines) > MAX_LINES:
        raise InvalidBasket(f"a basket has at most {MAX_LINES} lines")
    quantum = Decimal(1).scaleb(-currency_digits)
    with decimal.localcontext() as context:
        context.prec = 40  # exact for 6-place prices times 6-place quantities, with room
        context.traps[decimal.Inexact] = False
        return _price(view, lines, at, price_level, quantum)


def _price(
    view: CatalogueView,
    basket: Sequence[BasketLine],
    at: dt.datetime,
    price_level: str,
    quantum: Decimal,
) -> PricedBasket:
    # 1. Lines.
    resolved: list[tuple[BasketLine, int, _Line, str]] = []
    line_nos: set[int] = set()
    for position, line in enumerate(basket, 1):
        line_no = position if line.line_no is None else line.line_no
        if line_no in line_nos:
            raise InvalidBasket(f"line number {line_no} is used twice")
        line_nos.add(line_no)
        quantity = line.quantity
        if not quantity.is_finite() or quantity <= 0:
            raise InvalidBasket(f"line {line_no}: quantity must be greater than 0")
        exponent = quantity.as_tuple().exponent
        assert isinstance(exponent, int)
        if -exponent > MAX_PLACES or quantity >= Decimal(10) ** 9:
            raise InvalidBasket(f"line {line_no}: quantity {quantity} is out of range")
        item = view.item(line.sku)
        if item is None:
            raise UnknownSku(line.sku)
        level = price_level
        price = view.price(item.sku, level, at)
        if price is None and level != BASE_PRICE_LEVEL:
            level = BASE_PRICE_LEVEL
            price = view.price(item.sku, level, at)
        if price is None:
            raise NoPrice(item.sku, price_level, at.isoformat())
        units: int | None = None
        if not item.weighed:
            if quantity != quantity.to_integral_value():
                raise InvalidBasket(
                    f"line {line_no}: {item.sku} is sold in whole units, not {quantity}"
                )
            units = int(quantity)
        amount = round_half_up(quantity * price.amount, quantum)
        work = _Line(
            index=0,
            line_no=line_no,
            sku=item.sku,
            quantity=quantity,
            units=units,
            unit_price=price.amount,
            amount=amount,
        )
        resolved.append((line, line_no, work, level))

    # Canonical order: the result must not depend on the order the lines were scanned in.
    canonical = sorted((r[2] for r in resolved), key=lambda w: (w.sku, w.quantity, w.line_no))
    for index, work in enumerate(canonical):
        work.index = index
    pricer = _Pricer(canonical, quantum)

    active = sorted(view.promotions({w.sku for w in canonical}, at), key=_order)
    applied: list[PromotionApplied] = []
    not_applied: list[PromotionNotApplied] = []

    def record(promotion: Promotion, effect: _Effect, mode: Mode) -> None:
        pricer.apply(promotion, effect, mode)
        applied.append(
            PromotionApplied(
                promotion_id=promotion.promotion_id,
                kind=_kind(promotion),
                stackable=promotion.stackable,
                amount=effect.total,
                lines=[
                    LineShare(line_no=canonical[i].line_no, amount=amount)
                    for i, amount in sorted(effect.final.items())
                ],
                description=promotion.description,
            )
        )

    # 2. Exclusive promotions: by priority tier, best for the customer within a tier.
    exclusive = [p for p in active if not p.stackable]
    for _, tier_iter in itertools.groupby(exclusive, key=lambda p: p.priority):
        tier = list(tier_iter)
        while tier:
            best: tuple[Promotion, _Effect] | None = None
            for promotion in tier:  # in promotion_id order: the first of equals wins
                effect = pricer.evaluate(promotion, "exclusive")
                if effect.total > 0 and (best is None or effect.total > best[1].total):
                    best = (promotion, effect)
            if best is None:
                break
            record(best[0], best[1], "exclusive")
            tier.remove(best[0])
        for promotion in tier:
            fresh = _Pricer(
                [
                    _Line(w.index, w.line_no, w.sku, w.quantity, w.units, w.unit_price, w.amount)
                    for w in canonical
                ],
                quantum,
            )
            if fresh.evaluate(promotion, "exclusive").total > 0:
                reason = "its units went to a promotion with priority or a bigger saving"
            else:
                reason = _unmet_reason(promotion, fresh, "exclusive")
            not_applied.append(
                PromotionNotApplied(
                    promotion_id=promotion.promotion_id, kind=_kind(promotion), reason=reason
                )
            )

    # 3. Stackable promotions, in order, each on the amounts left by the ones before.
    for promotion in (p for p in active if p.stackable):
        effect = pricer.evaluate(promotion, "stackable")
        if effect.total > 0:
            record(promotion, effect, "stackable")
        else:
            not_applied.append(
                PromotionNotApplied(
                    promotion_id=promotion.promotion_id,
                    kind=_kind(promotion),
                    reason=_unmet_reason(promotion, pricer, "stackable"),
                )
            )

    # 4. Tax per line, and 5. totals.
    priced: list[PricedLine] = []
    for line, line_no, work, level in resolved:
        item = view.item(line.sku)
        assert item is not None
        tax = view.tax_code(item.tax_code)
        if tax is None:
            raise InvalidBasket(f"line {line_no}: tax code {item.tax_code!r} is unknown")
        net = work.net
        if tax.included:
            tax_amount = round_half_up(net * tax.rate / (1 + tax.rate), quantum)
            total = net
        else:
            tax_amount = round_half_up(net * tax.rate, quantum)
            total = net + tax_amount
        discount_total = sum((d for _, d in work.discounts), ZERO).quantize(quantum)
        priced.append(
            PricedLine(
                line_no=line_no,
                sku=item.sku,
                name=item.name,
                quantity=work.quantity,
                weighed=item.weighed,
                unit_price=work.unit_price,
                price_level=level,
                amount=work.amount,
                discounts=[
                    LineDiscount(promotion_id=p.promotion_id, kind=_kind(p), amount=d)
                    for p, d in work.discounts
                ],
                discount_total=discount_total,
                net=net,
                tax_code=tax.code,
                tax_rate=tax.rate,
                tax_included=tax.included,
                tax=tax_amount,
                total=total,
                age_restriction=item.age_restriction,
            )
        )

    def total_of(figure: Callable[[PricedLine], Decimal]) -> Decimal:
        # Every figure is already in cents; quantize only writes 0 as "0.00".
        return sum((figure(p) for p in priced), ZERO).quantize(quantum)

    return PricedBasket(
        at=at,
        version=view.version,
        price_level=price_level,
        lines=priced,
        subtotal=total_of(lambda p: p.amount),
        discount_total=total_of(lambda p: p.discount_total),
        tax_total=total_of(lambda p: p.tax),
        total=total_of(lambda p: p.total),
        applied=applied,
        not_applied=not_applied,
    )


_KINDS: Final[dict[type, PromotionKind]] = {
    PercentOff: "percent_off",
    AmountOff: "amount_off",
    BuyXGetY: "buy_x_get_y",
    MixAndMatch: "mix_and_match",
}


def _kind(promotion: Promotion) -> PromotionKind:
    return _KINDS[type(promotion)]
