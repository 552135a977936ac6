"""Delta validation, the pure half (check_delta): what is refused before the store is touched."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest

from edge.catalogue.errors import InvalidDelta
from edge.catalogue.model import (
    BuyXGetY,
    Deletions,
    MixAndMatch,
    PercentOff,
    Price,
    PriceRef,
    check_delta,
    decode_delta,
    price_key,
)
from tests.catalogue.builders import RED, STD, delta, field, item, price

FIELDS = {"color": field("color")}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (delta("x", items=[item("A"), item("A")]), "'A' appears twice"),
        (delta("x", items=[item("A B")]), "contains whitespace"),
        (delta("x", items=[item("A", barcodes=["1", "1"])]), "also on 'A'"),
        (delta("x", items=[item("A", barcodes=["1"]), item("B", barcodes=["1"])]), "also on"),
        (delta("x", items=[item("A", barcodes=["12 3"])]), "not printable ASCII"),
        (delta("x", items=[item("A", tax_code="bad code")]), "tax code 'bad code'"),
        (delta("x", prices=[price("A", "1.0000001")]), "more than 6 decimal places"),
        (delta("x", prices=[price("A", "1E+2")]), "plain notation"),
        (delta("x", prices=[price("A", "NaN")]), "not a number"),
        (
            delta(
                "x",
                prices=[
                    Price(
                        sku="A",
                        amount=Decimal(1),
                        valid_from=dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
                        valid_to=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                    )
                ],
            ),
            "valid_to must be after valid_from",
        ),
        (
            delta("x", items=[item("A")], deleted=Deletions(items=["A"])),
            "both upserted and deleted",
        ),
        (
            delta("x", prices=[price("A", "1.00")], deleted=Deletions(items=["A"])),
            "its item is deleted by the same delta",
        ),
        (
            delta("x", tax_codes=[msgspec.structs.replace(STD, rate=Decimal(11))]),
            "rate 11 is more than 10",
        ),
        (delta("x", prices=[price("A", "-0.01")]), "must be at least 0"),
        (
            delta("x", promotions=[PercentOff(promotion_id="P", skus=["A"], percent=Decimal(101))]),
            "more than 100",
        ),
        (
            delta(
                "x", promotions=[PercentOff(promotion_id="P", skus=["A", "A"], percent=Decimal(1))]
            ),
            "listed twice",
        ),
        (
            delta(
                "x",
                promotions=[
                    BuyXGetY(promotion_id="P", skus=["A"], buy=1, get=1, get_percent=Decimal(0))
                ],
            ),
            "must be greater than 0",
        ),
        (
            delta("x", promotions=[MixAndMatch(promotion_id="P", skus=["A"], quantity=3)]),
            "exactly one of",
        ),
        (
            # A stray half of the other form must not be silently ignored.
            delta(
                "x",
                promotions=[
                    MixAndMatch(
                        promotion_id="P",
                        skus=["A"],
                        quantity=3,
                        price=Decimal(5),
                        spend=Decimal(10),
                    )
                ],
            ),
            "exactly one of",
        ),
        (
            delta("x", promotions=[MixAndMatch(promotion_id="P", skus=["A"], spend=Decimal(10))]),
            "exactly one of",
        ),
        (
            delta("x", items=[item("A", custom={"color": 3})]),
            "custom field 'color' must be a string",
        ),
    ],
)
def test_check_delta_refuses_with_a_reason_naming_the_record(bad: object, reason: str) -> None:
    with pytest.raises(InvalidDelta, match="delta 'x'") as caught:
        check_delta(bad, custom_fields=FIELDS)  # type: ignore[arg-type]
    assert reason in caught.value.reason


def test_values_under_unconfigured_names_are_stripped_and_counted() -> None:
    prepared = check_delta(
        delta("x", items=[item("A", custom={"color": "red", "gone": 1}), item("B")]),
        custom_fields=FIELDS,
    )
    assert prepared.stripped == 1
    assert [i.custom for i in prepared.items] == [{"color": "red"}, {}]


def test_a_full_load_cannot_delete() -> None:
    with pytest.raises(InvalidDelta, match="cannot delete"):
        check_delta(
            delta("x", deleted=Deletions(prices=[PriceRef(sku="A")])),
            custom_fields={},
            allow_deletions=False,
        )


def test_a_valid_delta_passes_and_keeps_its_price_keys() -> None:
    start = dt.datetime(2026, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    prepared = check_delta(
        delta(
            "ok",
            tax_codes=[STD, RED],
            items=[item("A", barcodes=["123"]), item("W", weighed=True)],
            prices=[price("A", "1.99"), price("A", "1.49", valid_from=start, level="club")],
            promotions=[
                MixAndMatch(
                    promotion_id="M", skus=["A", "W"], spend=Decimal(10), amount_off=Decimal(1)
                ),
            ],
        ),
        custom_fields={},
    )
    # Two spellings of one instant make one key (the time in UTC).
    assert prepared.price_keys == ["A|base|", "A|club|2026-01-01T00:00:00Z"]
    assert price_key("A", "club", start.astimezone(dt.UTC)) == prepared.price_keys[1]


def test_unknown_fields_are_refused_on_the_wire() -> None:
    with pytest.raises(InvalidDelta, match="malformed delta"):
        decode_delta(b'{"delta_id": "x", "prices": [{"sku": "A", "amout": "1"}]}')
