"""Basket pricing (pure): a documented table of cases worked out by hand, and properties that
must hold for any basket and any promotions (Hypothesis).

The catalogue used by every case (VAT is included in shelf prices, SALES is added on top):

=====  ==========  =============  ==========================================================
SKU    price       tax            notes
=====  ==========  =============  ==========================================================
A      1.99        VAT 20 % incl  ``club`` level 1.79; a special 1.49 in force around AT
B      3.00        VAT 20 % incl
C      0.99        VAT 20 % incl
D      10.00       SALES 8 % add
E      1.00        VAT 20 % incl
F      2.50        SALES 8 % add
W      3.99 / kg   VAT 20 % incl  weighed
=====  ==========  =============  ==========================================================

Included tax is ``net × 0.2 / 1.2``; every rounding is half-up to the cent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.catalogue.errors import InvalidBasket, NoPrice, UnknownSku
from edge.catalogue.model import (
    AmountOff,
    BuyXGetY,
    MixAndMatch,
    PercentOff,
    Price,
    Promotion,
    TaxCode,
)
from edge.catalogue.pricing import BasketLine, PricedBasket, price_basket, round_half_up
from edge.catalogue.view import MemoryCatalogue
from tests.catalogue.builders import AT, item, price

VAT = TaxCode(code="VAT", rate=Decimal("0.2"), included=True)
SALES = TaxCode(code="SALES", rate=Decimal("0.08"), included=False)
ITEMS = [
    item("A", name="Apple juice", tax_code="VAT"),
    item("B", name="Bread", tax_code="VAT"),
    item("C", name="Crisps", tax_code="VAT"),
    item("D", name="Detergent", tax_code="SALES"),
    item("E", name="Eggs", tax_code="VAT"),
    item("F", name="Foil", tax_code="SALES"),
    item("W", name="Walnuts", tax_code="VAT", weighed=True),
]
PRICES = [
    price("A", "1.99"),
    price("A", "1.79", level="club"),
    price("B", "3.00"),
    price("C", "0.99"),
    price("D", "10.00"),
    price("E", "1.00"),
    price("F", "2.50"),
    price("W", "3.99"),
]
SPECIAL = price("A", "1.49", valid_from=AT - dt.timedelta(days=1), valid_to=AT + dt.timedelta(1))
LATER = price("A", "0.01", valid_from=AT + dt.timedelta(seconds=1))
D = Decimal


def catalogue(*promotions: Promotion, prices: list[Price] = PRICES) -> MemoryCatalogue:
    return MemoryCatalogue(
        items=ITEMS, prices=prices, promotions=promotions, tax_codes=[VAT, SALES], version=7
    )


def lines(*spec: tuple[str, str]) -> list[BasketLine]:
    return [BasketLine(sku=sku, quantity=D(q)) for sku, q in spec]


def pct(pid: str, skus: list[str], percent: str, **kw: Any) -> PercentOff:
    return PercentOff(promotion_id=pid, skus=skus, percent=D(percent), **kw)


def off(pid: str, skus: list[str], amount: str, **kw: Any) -> AmountOff:
    return AmountOff(promotion_id=pid, skus=skus, amount=D(amount), **kw)


@dataclass(frozen=True)
class Case:
    basket: list[BasketLine]
    promotions: tuple[Promotion, ...]
    lines: dict[int, tuple[str, str, str, str]]
    """line_no → (discount_total, net, tax, total)."""
    totals: tuple[str, str, str, str]
    """(subtotal, discount_total, tax_total, total)."""
    applied: Sequence[tuple[str, str]] = ()
    """(promotion_id, amount), in the order applied."""
    not_applied: dict[str, str] | None = None
    """promotion_id → a phrase of the reason."""
    price_level: str = "base"
    prices: list[Price] | None = None


CASES = {
    # 3.98 incl. VAT: 3.98 × 0.2 / 1.2 = 0.6633 → 0.66.
    "plain, included tax": Case(
        lines(("A", "2")), (), {1: ("0.00", "3.98", "0.66", "3.98")},
        ("3.98", "0.00", "0.66", "3.98"),
    ),
    # Added tax per line: 10.00 × 0.08 = 0.80; 7.50 × 0.08 = 0.60.
    "added tax": Case(
        lines(("D", "1"), ("F", "3")), (),
        {1: ("0.00", "10.00", "0.80", "10.80"), 2: ("0.00", "7.50", "0.60", "8.10")},
        ("17.50", "0.00", "1.40", "18.90"),
    ),
    # 0.455 kg × 3.99 = 1.81545 → 1.82; tax 0.30333 → 0.30.
    "weighed line rounds half-up": Case(
        lines(("W", "0.455")), (), {1: ("0.00", "1.82", "0.30", "1.82")},
        ("1.82", "0.00", "0.30", "1.82"),
    ),
    # 12.5 % of 1.00 = 0.125 → 0.13 (banker's rounding would say 0.12); tax 0.87 / 6 = 0.145
    # → 0.15 (banker's: 0.14).
    "half-up, not half-even": Case(
        lines(("E", "1")), (pct("P", ["E"], "12.5"),), {1: ("0.13", "0.87", "0.15", "0.87")},
        ("1.00", "0.13", "0.15", "0.87"), [("P", "0.13")],
    ),
    "percent off": Case(
        lines(("B", "2")), (pct("P10", ["B"], "10"),), {1: ("0.60", "5.40", "0.90", "5.40")},
        ("6.00", "0.60", "0.90", "5.40"), [("P10", "0.60")],
    ),
    # 0.50 off each of 3 units; tax 4.47 / 6 = 0.745 → 0.75.
    "amount off each unit": Case(
        lines(("A", "3")), (off("O", ["A"], "0.50"),), {1: ("1.50", "4.47", "0.75", "4.47")},
        ("5.97", "1.50", "0.75", "4.47"), [("O", "1.50")],
    ),
    "amount off never below zero": Case(
        lines(("C", "1")), (off("O", ["C"], "1.50"),), {1: ("0.99", "0.00", "0.00", "0.00")},
        ("0.99", "0.99", "0.00", "0.00"), [("O", "0.99")],
    ),
    # Units most expensive first: A, A, C; the group's cheapest unit (C) is free.
    "buy 2 get 1 free, the cheapest is free": Case(
        lines(("A", "2"), ("C", "1")),
        (BuyXGetY(promotion_id="B2G1", skus=["A", "C"], buy=2, get=1),),
        {1: ("0.00", "3.98", "0.66", "3.98"), 2: ("0.99", "0.00", "0.00", "0.00")},
        ("4.97", "0.99", "0.66", "3.98"), [("B2G1", "0.99")],
    ),
    # A weighed line is not a unit for buy-x-get-y.
    "buy 1 get 1 half price ignores weighed lines": Case(
        lines(("A", "1"), ("W", "1")),
        (BuyXGetY(promotion_id="BOGO", skus=["A", "W"], buy=1, get=1, get_percent=D(50)),),
        {1: ("0.00", "1.99", "0.33", "1.99"), 2: ("0.00", "3.99", "0.67", "3.99")},
        ("5.98", "0.00", "1.00", "5.98"), [], {"BOGO": "needs 2 eligible units, the basket has 1"},
    ),
    # B, A, A = 6.98 for 5.00: 1.98 off, spread 3.98 : 3.00 = 1.128997 : 0.851003 → 1.12 + 0.85
    # and the cent left to the largest remainder (A) → 1.13 + 0.85. Tax 2.85 / 6 = 0.475 →
    # 0.48; 2.15 / 6 = 0.3583 → 0.36.
    "3 for 5.00 over a mix of items": Case(
        lines(("A", "2"), ("B", "1")),
        (MixAndMatch(promotion_id="M3", skus=["A", "B"], quantity=3, price=D("5.00")),),
        {1: ("1.13", "2.85", "0.48", "2.85"), 2: ("0.85", "2.15", "0.36", "2.15")},
        ("6.98", "1.98", "0.84", "5.00"), [("M3", "1.98")],
    ),
    # Spend 16.00 ≥ 10: 1.00 off spread 6 : 10 = 0.375 : 0.625 → 0.37 + 0.62, the cent to the
    # tie's first line (B). B tax 5.62 / 6 = 0.9367 → 0.94; D tax 9.38 × 0.08 = 0.7504 → 0.75.
    "spend 10 get 1 off, spread by value": Case(
        lines(("D", "1"), ("B", "2")),
        (MixAndMatch(promotion_id="S10", skus=["B", "D"], spend=D(10), amount_off=D(1)),),
        {1: ("0.62", "9.38", "0.75", "10.13"), 2: ("0.38", "5.62", "0.94", "5.62")},
        ("16.00", "1.00", "1.69", "15.75"), [("S10", "1.00")],
    ),
    "spend threshold not reached": Case(
        lines(("B", "1")),
        (MixAndMatch(promotion_id="S10", skus=["B", "D"], spend=D(10), amount_off=D(1)),),
        {1: ("0.00", "3.00", "0.50", "3.00")}, ("3.00", "0.00", "0.50", "3.00"), [],
        {"S10": "needs a spend of 10 on eligible items, the basket has 3.00"},
    ),
    # 10 % of 6.00 = 0.60, then a stackable 5 % of 5.40 = 0.27: 14.5 % off, never 15 %.
    # Tax 5.13 / 6 = 0.855 → 0.86.
    "stackable applies on top of the exclusive": Case(
        lines(("B", "2")),
        (pct("P10", ["B"], "10"), pct("S5", ["B"], "5", stackable=True)),
        {1: ("0.87", "5.13", "0.86", "5.13")}, ("6.00", "0.87", "0.86", "5.13"),
        [("P10", "0.60"), ("S5", "0.27")],
    ),
    # Same priority: the bigger saving (0.50 > 0.30) takes the unit; the other gets none.
    "exclusive promotions: best for the customer": Case(
        lines(("B", "1")), (pct("P10", ["B"], "10"), off("O50", ["B"], "0.50")),
        {1: ("0.50", "2.50", "0.42", "2.50")}, ("3.00", "0.50", "0.42", "2.50"),
        [("O50", "0.50")], {"P10": "went to a promotion with priority or a bigger saving"},
    ),
    # Priority beats the size of the saving.
    "exclusive promotions: priority first": Case(
        lines(("B", "1")), (pct("P10", ["B"], "10", priority=10), off("O50", ["B"], "0.50")),
        {1: ("0.30", "2.70", "0.45", "2.70")}, ("3.00", "0.30", "0.45", "2.70"),
        [("P10", "0.30")], {"O50": "went to a promotion with priority or a bigger saving"},
    ),
    # Buy 2 get 1 free saves 1.99 on three units; 10 % on all four would save 0.80. The
    # greedy takes the B2G1 first, then 10 % of the fourth unit (0.199 → 0.20). Tax
    # 5.77 / 6 = 0.9617 → 0.96.
    "exclusive promotions share a line's units": Case(
        lines(("A", "4")),
        (BuyXGetY(promotion_id="B2G1", skus=["A"], buy=2, get=1), pct("P10", ["A"], "10")),
        {1: ("2.19", "5.77", "0.96", "5.77")}, ("7.96", "2.19", "0.96", "5.77"),
        [("B2G1", "1.99"), ("P10", "0.20")],
    ),
    # The special that started last wins; a price starting after AT and an expired
    # promotion are not in force.
    "validity windows": Case(
        lines(("A", "1")),
        (pct("OLD", ["A"], "50", valid_to=AT),
         pct("SOON", ["A"], "50", valid_from=AT + dt.timedelta(1))),
        {1: ("0.00", "1.49", "0.25", "1.49")}, ("1.49", "0.00", "0.25", "1.49"),
        prices=[*PRICES, SPECIAL, LATER],
    ),
    # The club level where the item has one, else base.
    "price level falls back to base": Case(
        lines(("A", "1"), ("B", "1")), (),
        {1: ("0.00", "1.79", "0.30", "1.79"), 2: ("0.00", "3.00", "0.50", "3.00")},
        ("4.79", "0.00", "0.80", "4.79"), price_level="club",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_pricing_case(case: Case) -> None:
    view = catalogue(*case.promotions, prices=case.prices or PRICES)
    result = price_basket(view, case.basket, AT, price_level=case.price_level)
    got = {
        line.line_no: (str(line.discount_total), str(line.net), str(line.tax), str(line.total))
        for line in result.lines
    }
    assert got == case.lines
    totals = (result.subtotal, result.discount_total, result.tax_total, result.total)
    assert tuple(map(str, totals)) == case.totals
    assert [(a.promotion_id, str(a.amount)) for a in result.applied] == list(case.applied)
    reasons = {n.promotion_id: n.reason for n in result.not_applied}
    assert reasons.keys() == (case.not_applied or {}).keys()
    for promotion_id, phrase in (case.not_applied or {}).items():
        assert phrase in reasons[promotion_id]
    assert result.version == 7


def test_the_reply_explains_which_promotion_applied_to_which_line() -> None:
    result = price_basket(
        catalogue(MixAndMatch(promotion_id="M3", skus=["A", "B"], quantity=3, price=D(5))),
        lines(("A", "2"), ("B", "1"), ("C", "1")),
        AT,
    )
    [applied] = result.applied
    assert [(s.line_no, str(s.amount)) for s in applied.lines] == [(1, "1.13"), (2, "0.85")]
    by_line = {line.line_no: line for line in result.lines}
    assert [(d.promotion_id, d.kind, str(d.amount)) for d in by_line[1].discounts] == [
        ("M3", "mix_and_match", "1.13")
    ]
    assert by_line[3].discounts == []
    assert by_line[1].name == "Apple juice"
    assert by_line[1].price_level == "base"


@pytest.mark.parametrize(
    ("basket", "error", "match"),
    [
        (lines(("NOPE", "1")), UnknownSku, "NOPE"),
        (lines(("A", "1.5")), InvalidBasket, "whole units"),
        (lines(("A", "0")), InvalidBasket, "greater than 0"),
        (lines(("W", "0.0000001")), InvalidBasket, "out of range"),
        ([BasketLine(sku="A", quantity=D(1), line_no=2), BasketLine(sku="B", quantity=D(1))],
         InvalidBasket, "used twice"),
    ],
)  # fmt: skip
def test_a_basket_that_cannot_be_priced_is_refused_clearly(
    basket: list[BasketLine], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        price_basket(catalogue(), basket, AT)


def test_no_price_and_naive_time_are_refused() -> None:
    with pytest.raises(NoPrice, match="'B'"):
        price_basket(catalogue(prices=[price("A", "1.00")]), lines(("B", "1")), AT)
    with pytest.raises(InvalidBasket, match="UTC offset"):
        price_basket(catalogue(), lines(("A", "1")), AT.replace(tzinfo=None))


def test_round_half_up() -> None:
    cent = D("0.01")
    assert [str(round_half_up(D(v), cent)) for v in ("0.125", "0.135", "2.675", "0.0049")] == [
        "0.13",
        "0.14",
        "2.68",
        "0.00",
    ]


# --------------------------------------------------------------------------------------------
# Properties, for any basket and any set of promotions.

# An odd price (3 decimal places) makes partial-unit rounding happen.
PROPERTY_PRICES = [*PRICES, price("E", "0.335", level="club")]
SKUS = ["A", "B", "C", "D", "E", "F", "W"]
CENT = D("0.01")

money = st.decimals(D("0.01"), D("20.00"), places=2)


@st.composite
def promotions(draw: st.DrawFn) -> list[Promotion]:
    found: list[Promotion] = []
    for n in range(draw(st.integers(0, 5))):
        common: dict[str, Any] = {
            "promotion_id": f"P{n}",
            "skus": draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=4, unique=True)),
            "stackable": draw(st.booleans()),
            "priority": draw(st.integers(0, 2)),
        }
        kind = draw(st.sampled_from(["percent", "amount", "bxgy", "n_for", "spend"]))
        if kind == "percent":
            found.append(PercentOff(percent=draw(st.decimals(1, 100, places=1)), **common))
        elif kind == "amount":
            found.append(AmountOff(amount=draw(money), **common))
        elif kind == "bxgy":
            found.append(
                BuyXGetY(
                    buy=draw(st.integers(1, 3)),
                    get=draw(st.integers(1, 2)),
                    get_percent=draw(st.sampled_from([D(50), D(100)])),
                    **common,
                )
            )
        elif kind == "n_for":
            found.append(MixAndMatch(quantity=draw(st.integers(2, 4)), price=draw(money), **common))
        else:
            found.append(MixAndMatch(spend=draw(money), amount_off=draw(money), **common))
    return found


@st.composite
def baskets(draw: st.DrawFn) -> list[BasketLine]:
    found: list[BasketLine] = []
    for n in range(1, draw(st.integers(1, 8)) + 1):
        sku = draw(st.sampled_from(SKUS))
        if sku == "W":
            quantity = draw(st.decimals(D("0.001"), D("5"), places=3))
        else:
            quantity = D(draw(st.integers(1, 6)))
        found.append(BasketLine(sku=sku, quantity=quantity, line_no=n))
    return found


def normalised(result: PricedBasket) -> object:
    """The result with its lines in line-number order (the reply keeps the basket's order)."""
    return msgspec.to_builtins(
        msgspec.structs.replace(result, lines=sorted(result.lines, key=lambda x: x.line_no))
    )


@settings(max_examples=300, deadline=None)
@given(
    basket=baskets(), promos=promotions(), level=st.sampled_from(["base", "club"]), data=st.data()
)
def test_pricing_properties(
    basket: list[BasketLine], promos: list[Promotion], level: str, data: st.DataObject
) -> None:
    view = MemoryCatalogue(
        items=ITEMS, prices=PROPERTY_PRICES, promotions=promos, tax_codes=[VAT, SALES]
    )
    result = price_basket(view, basket, AT, price_level=level)

    # Independent of the order of the lines and of the promotions; deterministic.
    shuffled = data.draw(st.permutations(basket))
    reversed_view = MemoryCatalogue(
        items=ITEMS, prices=PROPERTY_PRICES, promotions=promos[::-1], tax_codes=[VAT, SALES]
    )
    assert normalised(price_basket(reversed_view, shuffled, AT, price_level=level)) == normalised(
        result
    )
    assert price_basket(view, basket, AT, price_level=level) == result

    # The sums add up: total = lines − discounts + added tax, and line totals make the total.
    added_tax = sum((line.tax for line in result.lines if not line.tax_included), D(0))
    assert result.total == result.subtotal - result.discount_total + added_tax
    assert result.total == sum((line.total for line in result.lines), D(0))
    assert result.subtotal == sum((line.amount for line in result.lines), D(0))
    assert result.discount_total == sum((a.amount for a in result.applied), D(0))
    assert result.tax_total == sum((line.tax for line in result.lines), D(0))
    for line in result.lines:
        assert line.discount_total == sum((d.amount for d in line.discounts), D(0))
        assert line.net == line.amount - line.discount_total
        # Never negative, always whole cents.
        for figure in (line.amount, line.discount_total, line.net, line.tax, line.total):
            assert figure >= 0
            assert figure == figure.quantize(CENT)
    for applied in result.applied:
        assert applied.amount > 0
        assert applied.amount == sum((s.amount for s in applied.lines), D(0))
    # Every active promotion is accounted for, once.
    ids = [a.promotion_id for a in result.applied] + [n.promotion_id for n in result.not_applied]
    naming = {p.promotion_id for p in promos if set(p.skus) & {b.sku for b in basket}}
    assert sorted(ids) == sorted(naming)
    assert result.total >= 0
