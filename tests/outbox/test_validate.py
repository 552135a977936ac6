"""Validation of register transactions: every refusal code, the card rule, and properties.

The arithmetic and the card-number checks the properties rely on are written out here again
(Luhn, GS1, half-up rounding), independently of the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from edge.outbox.transactions import DECIMAL_FIELDS, KINDS, Sale, transaction_json_schema
from edge.outbox.validate import (
    VALIDATION_ERROR_CODES,
    Accepted,
    FlagCode,
    TransactionRejected,
    ValidationCode,
    validate,
)

DATA = Path(__file__).parent / "data"
GOLDEN = sorted(path.stem for path in DATA.glob("*.json"))
MAX = 256 * 1024
SCHEMA = jsonschema.Draft202012Validator(transaction_json_schema())

Doc = dict[str, Any]


def golden(name: str) -> Doc:
    document: Doc = json.loads((DATA / f"{name}.json").read_text())
    return document


def refusal(document: Doc | bytes, **kwargs: Any) -> TransactionRejected:
    with pytest.raises(TransactionRejected) as caught:
        validate(document, max_bytes=kwargs.pop("max_bytes", MAX), **kwargs)
    return caught.value


def changed(name: str, change: Callable[[Doc], object]) -> Doc:
    document = golden(name)
    change(document)
    return document


# --- independent helpers -------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def with_luhn_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def gs1_ok(digits: str) -> bool:
    weighted = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(digits[:-1])))
    return (10 - weighted % 10) % 10 == int(digits[-1])


def half_up(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


# --- golden examples -----------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_examples_are_accepted_from_bytes_and_from_a_dict_alike(name: str) -> None:
    """Prevents the two entry points (raw MQTT payload, already-decoded dict) disagreeing."""
    raw = (DATA / f"{name}.json").read_bytes()
    from_bytes = validate(raw, max_bytes=MAX, unknown_skus=lambda skus: ())
    from_dict = validate(json.loads(raw), max_bytes=MAX, unknown_skus=lambda skus: ())
    assert from_bytes == from_dict
    assert from_bytes.txn.kind == golden(name)["kind"]


def test_every_code_has_a_one_line_meaning() -> None:
    """docs/protocol.md is generated from this table; prevents an undocumented code."""
    codes = {v for k, v in vars(ValidationCode).items() if not k.startswith("_")}
    assert set(VALIDATION_ERROR_CODES) == codes
    for retryable, meaning in VALIDATION_ERROR_CODES.values():
        assert retryable is False
        assert meaning
        assert "\n" not in meaning


# --- TOO_LARGE and MALFORMED_JSON ----------------------------------------------------------


def test_a_transaction_one_byte_over_the_limit_is_refused_before_parsing() -> None:
    raw = (DATA / "sale_cash.json").read_bytes()
    assert validate(raw, max_bytes=len(raw)).txn.kind == "sale"
    error = refusal(raw, max_bytes=len(raw) - 1)
    assert error.code == ValidationCode.TOO_LARGE


def test_the_size_limit_applies_to_a_dict_as_well() -> None:
    error = refusal(golden("sale_cash"), max_bytes=100)
    assert error.code == ValidationCode.TOO_LARGE


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"kind": "sale",}',
        b"\xff\xfe{}",
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
        b"[" * 50_000 + b"]" * 50_000,
        b'"\\ud800"',
    ],
    ids=[
        "empty",
        "truncated",
        "trailing-comma",
        "not-utf8",
        "nan",
        "infinity",
        "deep",
        "surrogate",
    ],
)
def test_malformed_json_is_refused_as_such(raw: bytes) -> None:
    """Prevents a parser crash (or a RecursionError) escaping as a hub INTERNAL error."""
    assert refusal(raw, max_bytes=len(raw) + 1).code == ValidationCode.MALFORMED_JSON


# --- SCHEMA_INVALID ------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def change(document: Doc) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _delete(path: str) -> Callable[[Doc], None]:
    def change(document: Doc) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return change


SCHEMA_CASES = [
    ("unknown-field", "sale_cash", _set("tenderd", "20.00"), "$"),
    ("missing-totals", "sale_cash", _delete("totals"), "$"),
    ("amount-as-number", "sale_cash", _set("lines.0.amount", 6.98), "$.lines[0].amount"),
    ("amount-as-integer", "paid_in", _set("amount", 100), "$.amount"),
    ("exponent", "sale_cash", _set("lines.0.amount", "698e-2"), "$.lines[0].amount"),
    ("underscore", "paid_in", _set("amount", "1_00.00"), "$.amount"),
    ("leading-zero", "paid_in", _set("amount", "0100.00"), "$.amount"),
    ("plus-sign", "paid_in", _set("amount", "+100.00"), "$.amount"),
    ("usd-with-3-places", "sale_cash", _set("lines.0.amount", "6.980"), "$.lines[0].amount"),
    ("yen-with-cents", "sale_jpy_split_tender", _set("totals.change", "904.0"), "$.totals.change"),
    (
        "price-7-places",
        "sale_cash",
        _set("lines.0.unit_price", "3.4900001"),
        "$.lines[0].unit_price",
    ),
    ("13-digit-amount", "paid_in", _set("amount", "1000000000000.00"), "$.amount"),
    ("quantity-and-weight", "sale_cash", _set("lines.1.quantity", "1"), "$.lines[1]"),
    ("neither", "sale_cash", _delete("lines.0.quantity"), "$.lines[0]"),
    ("duplicate-line-no", "sale_cash", _set("lines.1.line_no", 1), "$.lines[1].line_no"),
    (
        "change-on-card",
        "exchange_customer_pays",
        _set("tenders.0.change", "1.00"),
        "$.tenders[0].change",
    ),
    ("naive-time", "no_sale", _set("register_time", "2026-05-01T10:15:00"), "$.register_time"),
    ("txn-id-space", "no_sale", _set("txn_id", "S042 R02"), "$.txn_id"),
    ("txn-id-too-long", "no_sale", _set("txn_id", "x" * 65), "$.txn_id"),
    ("empty-store", "no_sale", _set("store_id", ""), "$.store_id"),
    ("currency-lowercase", "no_sale", _set("currency", "usd"), "$.currency"),
    (
        "last4-five-digits",
        "sale_card_customer_vat_included",
        _set("tenders.0.last4", "11111"),
        "$.tenders[0].last4",
    ),
    ("bad-tender-type", "sale_cash", _set("tenders.0.type", "crypto"), "$.tenders[0].type"),
    ("sku-with-space", "sale_cash", _set("lines.0.sku", "OAT BAR"), "$.lines[0].sku"),
    (
        "post-void-with-lines",
        "void_post",
        _set("lines", golden("void_abandoned_basket")["lines"]),
        "$.lines",
    ),
    (
        "till-twice-cash",
        "till_close",
        _set("counts.1.tender_type", "cash"),
        "$.counts[1].tender_type",
    ),
    ("weight-unit", "sale_cash", _set("lines.1.weight.unit", "g"), "$.lines[1].weight.unit"),
]


@pytest.mark.parametrize(
    ("name", "change", "path"),
    [case[1:] for case in SCHEMA_CASES],
    ids=[c[0] for c in SCHEMA_CASES],
)
def test_schema_violations_are_refused_with_their_path(
    name: str, change: Callable[[Doc], None], path: str
) -> None:
    """Each case is a mistake a register integrator could make; prevents it being accepted
    (and posted wrong) or refused without saying where."""
    error = refusal(changed(name, change))
    assert (error.code, error.path) == (ValidationCode.SCHEMA_INVALID, path)
    assert error.message


def test_a_repeated_key_is_refused_because_readers_would_disagree() -> None:
    """{"total": "1.00", "total": "100.00"}: prevents the hub and the ERP connector each
    picking a different value."""
    raw = (
        (DATA / "paid_in.json")
        .read_bytes()
        .replace(b'"amount": "100.00"', b'"amount": "1.00", "amount": "100.00"')
    )
    error = refusal(raw)
    assert (error.code, error.path) == (ValidationCode.SCHEMA_INVALID, "$.amount")


def test_not_an_object_is_a_schema_error() -> None:
    assert refusal(b"[1, 2]").code == ValidationCode.SCHEMA_INVALID


# --- UNSUPPORTED_KIND ----------------------------------------------------------------------


def test_an_unknown_kind_is_refused_and_the_known_ones_are_listed() -> None:
    """Prevents a newer register's kind being misread as a schema error it cannot fix."""
    error = refusal(golden("sale_cash") | {"kind": "layaway"})
    assert (error.code, error.path) == (ValidationCode.UNSUPPORTED_KIND, "$.kind")
    assert all(kind in error.message for kind in KINDS)


def test_a_kind_that_is_not_a_string_is_a_schema_error() -> None:
    assert refusal(golden("sale_cash") | {"kind": 7}).code == ValidationCode.SCHEMA_INVALID


# --- TOTALS_MISMATCH -----------------------------------------------------------------------

TOTALS_CASES = [
    (
        "line-amount",
        "sale_cash",
        _set("lines.0.amount", "6.99"),
        "$.lines[0].amount",
        "6.99",
        "6.98",
    ),
    (
        "subtotal",
        "sale_cash",
        _set("totals.subtotal", "12.88"),
        "$.totals.subtotal",
        "12.88",
        "12.89",
    ),
    (
        "discounts",
        "sale_cash",
        _set("totals.discount_total", "0.60"),
        "$.totals.discount_total",
        "0.60",
        "0.59",
    ),
    ("tax", "sale_cash", _set("totals.tax_total", "1.03"), "$.totals.tax_total", "1.03", "1.02"),
    ("total", "sale_cash", _set("totals.total", "13.31"), "$.totals.total", "13.31", "13.32"),
    (
        "tendered",
        "sale_cash",
        _set("totals.tendered", "20.01"),
        "$.totals.tendered",
        "20.01",
        "20.00",
    ),
    ("change", "sale_cash", _set("totals.change", "6.67"), "$.totals.change", "6.67", "6.68"),
    (
        "tax-included",
        "sale_card_customer_vat_included",
        _set("totals.total", "25.86"),
        "$.totals.total",
        "25.86",
        "23.40",
    ),
    (
        "net-exchange",
        "exchange_refund",
        _set("totals.subtotal", "5.00"),
        "$.totals.subtotal",
        "5.00",
        "-5.00",
    ),
    (
        "variance",
        "till_close",
        _set("counts.0.variance", "2.60"),
        "$.counts[0].variance",
        "2.60",
        "-2.60",
    ),
]


@pytest.mark.parametrize(
    ("name", "change", "path", "declared", "computed"),
    [case[1:] for case in TOTALS_CASES],
    ids=[case[0] for case in TOTALS_CASES],
)
def test_each_figure_that_does_not_reconcile_is_named_with_both_values(
    name: str, change: Callable[[Doc], None], path: str, declared: str, computed: str
) -> None:
    """Prevents a sale posting with figures the ERP would book differently from the
    receipt, and tells the integrator which figure and by how much."""
    error = refusal(changed(name, change))
    assert (error.code, error.path) == (ValidationCode.TOTALS_MISMATCH, path)
    assert declared in error.message
    assert computed in error.message


def test_total_must_equal_tendered_minus_change() -> None:
    """Tender and totals agree with each other but not with the basket: the customer paid
    less than the total."""

    def underpay(document: Doc) -> None:
        document["tenders"][0]["amount"] = "19.00"
        document["totals"]["tendered"] = "19.00"

    error = refusal(changed("sale_cash", underpay))
    assert (error.code, error.path) == (ValidationCode.TOTALS_MISMATCH, "$.totals")
    assert "13.32" in error.message
    assert "12.32" in error.message


def test_change_cannot_exceed_the_cash_it_came_from() -> None:
    def odd_change(document: Doc) -> None:
        document["tenders"] = [
            {"type": "card", "amount": "16.00"},
            {"type": "cash", "amount": "1.00", "change": "3.68"},
        ]
        document["totals"] |= {"tendered": "17.00", "change": "3.68"}

    error = refusal(changed("sale_cash", odd_change))
    assert (error.code, error.path) == (ValidationCode.TOTALS_MISMATCH, "$.tenders[1].change")


def test_an_exchange_refund_is_settled_by_tenders_going_back() -> None:
    """A negative net total is refunded: tendered - change equals its absolute value. Prevents
    an exchange refund being accepted with the wrong refund amount."""
    refusal_doc = changed("exchange_refund", _set("tenders.0.amount", "5.40"))
    refusal_doc["totals"]["tendered"] = "5.40"
    error = refusal(refusal_doc)
    assert (error.code, error.path) == (ValidationCode.TOTALS_MISMATCH, "$.totals")


@pytest.mark.parametrize(
    ("quantity", "price", "amount", "ok"),
    [
        ("0.5", "0.01", "0.01", True),  # exactly half a cent rounds up, not to even
        ("0.5", "0.01", "0.00", False),
        ("1.5", "0.03", "0.05", True),  # 0.045 -> 0.05
        ("3", "0.333333", "1.00", True),  # 0.999999 -> 1.00
        ("0.333", "3", "1.00", True),  # 0.999 -> 1.00
        ("0.333", "3", "0.99", False),  # no truncation
    ],
)
def test_line_amount_rounds_half_up_to_the_minor_unit(
    quantity: str, price: str, amount: str, ok: bool
) -> None:
    """The documented rule registers implement; prevents banker's rounding or truncation
    refusing correct receipts (or accepting wrong ones)."""
    expected = half_up(Decimal(quantity) * Decimal(price), 2)
    assert (expected == Decimal(amount)) is ok
    document = basket_document(
        "sale", "USD", [(quantity, price, amount, [], None)], tax_included=False
    )
    if ok:
        validate(document, max_bytes=MAX)
    else:
        assert refusal(document).code == ValidationCode.TOTALS_MISMATCH


# --- CARD_NUMBER_REFUSED -------------------------------------------------------------------

# Published test card numbers (card brands' sandbox numbers).
TEST_PANS = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "30569309025904",
    "4222222222222",
    "6759649826438453",
]

CARD_SITES = [
    (
        "description",
        _set("lines.0.description", "paid with {pan} thanks"),
        "$.lines[0].description",
    ),
    ("receipt-no", _set("receipt_no", "{pan}"), "$.receipt_no"),
    ("auth-code", _set("tenders.0.auth_code", "{pan}"), "$.tenders[0].auth_code"),
    (
        "discount",
        _set("lines.1.discounts.0.description", "card {pan}"),
        "$.lines[1].discounts[0].description",
    ),
    ("unknown-field", _set("note", "{pan}"), "$.note"),
    ("sku", _set("lines.0.sku", "{pan}"), "$.lines[0].sku"),
    ("nested-unknown", _set("extra", {"a": [{"b": "{pan}"}]}), "$.extra.a[0].b"),
]


def _inject(change: Callable[[Doc], None], pan: str) -> Callable[[Doc], None]:
    def apply(document: Doc) -> None:
        change(document)
        text = json.dumps(document).replace("{pan}", pan)
        document.clear()
        document.update(json.loads(text))

    return apply


@pytest.mark.parametrize("pan", TEST_PANS)
@pytest.mark.parametrize(
    ("change", "path"), [case[1:] for case in CARD_SITES], ids=[case[0] for case in CARD_SITES]
)
def test_a_card_number_is_refused_by_path_without_echoing_it(
    change: Callable[[Doc], None], path: str, pan: str
) -> None:
    """PCI DSS: the hub must never store a PAN. Prevents it being accepted, and prevents the
    refusal itself (logged, sent back over MQTT) from repeating it."""
    error = refusal(changed("sale_cash", _inject(change, pan)))
    assert (error.code, error.path) == (ValidationCode.CARD_NUMBER_REFUSED, path)
    assert pan not in str(error)
    assert pan[-8:] not in str(error)


@pytest.mark.parametrize(
    "written",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111 - 1111 - 1111 - 1111",
        "3782 822463 10005",
        "6759 6498 2643 8453",
        "４１１１１１１１１１１１１１１１",  # full-width digits are digits too
    ],
)
def test_card_numbers_written_in_groups_are_refused(written: str) -> None:
    error = refusal(changed("sale_cash", _set("lines.0.description", f"PAN {written}.")))
    assert error.code == ValidationCode.CARD_NUMBER_REFUSED


def test_a_card_number_as_a_json_number_is_refused() -> None:
    """Scan numbers too: prevents a PAN hiding in a numeric field (even a valid one)."""
    for value in (4111111111111111, 4.111111111111111e15):
        error = refusal(changed("sale_cash", _set("lines.0.line_no", value)))
        assert (error.code, error.path) == (
            ValidationCode.CARD_NUMBER_REFUSED,
            "$.lines[0].line_no",
        )


def test_a_card_number_as_an_object_key_is_refused_naming_the_object() -> None:
    error = refusal(changed("sale_cash", _set("lines.0.4111111111111111", "x")))
    assert (error.code, error.path) == (ValidationCode.CARD_NUMBER_REFUSED, "$.lines[0]")


def test_a_card_number_hidden_behind_a_repeated_key_is_still_refused() -> None:
    """The shadowed first value is never read by the hub, but it is in the bytes."""
    raw = b'{"kind": "no_sale", "note": "4111111111111111", "note": "x"}'
    assert refusal(raw).code == ValidationCode.CARD_NUMBER_REFUSED


def test_a_card_number_in_a_json_escape_is_refused() -> None:
    raw = (
        (DATA / "no_sale.json")
        .read_bytes()
        .replace(b'"reason": "', b'"reason": "\\u0034111111111111111 ')
    )
    assert refusal(raw).code == ValidationCode.CARD_NUMBER_REFUSED


def test_the_tender_token_may_hold_any_digits() -> None:
    """Format-preserving PSP tokens look like card numbers; prevents refusing the one field
    meant to carry a card reference."""
    document = changed("sale_card_customer_vat_included", _set("tenders.0.token", TEST_PANS[0]))
    assert validate(document, max_bytes=MAX).txn.kind == "sale"


def test_a_token_field_anywhere_else_is_not_exempt() -> None:
    document = changed("sale_cash", _set("lines.0.token", TEST_PANS[0]))
    assert refusal(document).code == ValidationCode.CARD_NUMBER_REFUSED


def test_an_ean13_sku_that_happens_to_pass_luhn_is_a_barcode_not_a_card() -> None:
    """One barcode in ten passes Luhn; prevents refusing sales of those products. The same
    digits in free text are still refused."""
    barcode = "4006381333924"
    assert gs1_ok(barcode)
    assert luhn_ok(barcode)
    sale = changed("sale_cash", _set("lines.0.sku", barcode))
    assert validate(sale, max_bytes=MAX).txn.kind == "sale"
    text = changed("sale_cash", _set("lines.0.description", barcode))
    assert refusal(text).code == ValidationCode.CARD_NUMBER_REFUSED


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn
        "41111111111111110",  # 17 digits, fails Luhn
        "411111111111111100000",  # 21 digits: a longer number, not a card
        "S042-R02-20260501-000123",  # the recommended txn id shape
        "2026-05-01 10:15:00 order 000123",
        "+44 20 7946 0958",
    ],
)
def test_digit_strings_that_are_not_card_numbers_are_accepted(text: str) -> None:
    """Prevents false positives refusing real sales."""
    document = changed("sale_cash", _set("lines.0.description", text))
    assert validate(document, max_bytes=MAX).txn.kind == "sale"


# --- CURRENCY_MISMATCH, EMPTY_TRANSACTION, NEGATIVE_AMOUNT ---------------------------------


def test_a_transaction_in_another_currency_than_the_store_is_refused() -> None:
    error = refusal(golden("sale_cash"), currency="EUR")
    assert (error.code, error.path) == (ValidationCode.CURRENCY_MISMATCH, "$.currency")
    assert validate(golden("sale_cash"), max_bytes=MAX, currency="USD").txn.currency == "USD"


def test_a_foreign_currency_tender_is_refused() -> None:
    error = refusal(changed("sale_cash", _set("tenders.0.currency", "EUR")))
    assert (error.code, error.path) == (ValidationCode.CURRENCY_MISMATCH, "$.tenders[0].currency")


def _empty_exchange(document: Doc) -> None:
    document["sold_lines"] = []


EMPTY_CASES = [
    ("sale", "sale_cash", _set("lines", []), "$.lines"),
    ("return", "return_with_receipt", _set("lines", []), "$.lines"),
    ("exchange", "exchange_customer_pays", _empty_exchange, "$.sold_lines"),
    ("till-close", "till_close", _set("counts", []), "$.counts"),
]


@pytest.mark.parametrize(
    ("name", "change", "path"), [c[1:] for c in EMPTY_CASES], ids=[c[0] for c in EMPTY_CASES]
)
def test_a_transaction_with_nothing_to_post_is_refused(
    name: str, change: Callable[[Doc], None], path: str
) -> None:
    error = refusal(changed(name, change))
    assert (error.code, error.path) == (ValidationCode.EMPTY_TRANSACTION, path)


def _over_discount(document: Doc) -> None:
    # Consistent totals, but the line is discounted below zero.
    line = document["lines"][0]
    line["discounts"] = [{"description": "mistake", "amount": "7.00"}]
    document["totals"] |= {"discount_total": "7.59", "total": "6.32", "change": "13.68"}
    document["tenders"][0]["change"] = "13.68"


NEGATIVE_CASES = [
    ("quantity", "sale_cash", _set("lines.0.quantity", "-2"), "$.lines[0].quantity"),
    ("zero-quantity", "sale_cash", _set("lines.0.quantity", "0"), "$.lines[0].quantity"),
    ("zero-weight", "sale_cash", _set("lines.1.weight.value", "0.000"), "$.lines[1].weight.value"),
    (
        "discount",
        "sale_cash",
        _set("lines.1.discounts.0.amount", "-0.59"),
        "$.lines[1].discounts[0].amount",
    ),
    ("return-amount", "return_with_receipt", _set("lines.0.amount", "-3.49"), "$.lines[0].amount"),
    ("paid-out", "paid_out", _set("amount", "-25.00"), "$.amount"),
    ("paid-in-zero", "paid_in", _set("amount", "0.00"), "$.amount"),
    ("tender-zero", "sale_cash", _set("tenders.0.amount", "0.00"), "$.tenders[0].amount"),
    ("sale-subtotal", "sale_cash", _set("totals.subtotal", "-12.89"), "$.totals.subtotal"),
    ("return-total", "return_with_receipt", _set("totals.total", "-3.78"), "$.totals.total"),
    ("over-discount", "sale_cash", _over_discount, "$.lines[0].discounts"),
]


@pytest.mark.parametrize(
    ("name", "change", "path"), [c[1:] for c in NEGATIVE_CASES], ids=[c[0] for c in NEGATIVE_CASES]
)
def test_a_sign_where_the_kind_gives_the_direction_is_refused(
    name: str, change: Callable[[Doc], None], path: str
) -> None:
    """Prevents a return with negative quantities (a double negative the ERP would book as a
    sale) and zero-value tenders or lines."""
    error = refusal(changed(name, change))
    assert (error.code, error.path) == (ValidationCode.NEGATIVE_AMOUNT, path)


# --- review flags --------------------------------------------------------------------------


def test_an_unknown_sku_is_accepted_and_flagged_for_review() -> None:
    """The sale happened; prevents refusing it because the catalogue is behind."""
    accepted = validate(
        golden("exchange_customer_pays"),
        max_bytes=MAX,
        unknown_skus=lambda skus: {"SHIRT-L"} & set(skus),
    )
    assert [(f.code, f.path, f.sku) for f in accepted.exceptions] == [
        (FlagCode.UNKNOWN_SKU, "$.sold_lines[0].sku", "SHIRT-L")
    ]
    assert accepted.flags == accepted.exceptions


def test_known_skus_and_no_catalogue_raise_no_flags() -> None:
    assert validate(golden("sale_cash"), max_bytes=MAX, unknown_skus=lambda skus: ()).flags == []
    assert validate(golden("sale_cash"), max_bytes=MAX).flags == []


def test_a_return_without_receipt_is_flagged() -> None:
    """Loss prevention reviews no-receipt returns; prevents them passing unnoticed."""
    accepted = validate(golden("return_no_receipt_store_credit"), max_bytes=MAX)
    assert [(f.code, f.path) for f in accepted.flags] == [
        (FlagCode.NO_RECEIPT_RETURN, "$.original")
    ]


# --- properties: nothing but TransactionRejected -------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


def _outcome(document: Any) -> Accepted | TransactionRejected:
    """The verdict; anything raised other than TransactionRejected fails the test."""
    outcome: Accepted | TransactionRejected
    try:
        outcome = validate(document, max_bytes=MAX)
    except TransactionRejected as error:
        outcome = error
    if isinstance(outcome, TransactionRejected):
        assert outcome.code in VALIDATION_ERROR_CODES
    return outcome


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_yield_a_refusal(raw: bytes) -> None:
    """Prevents a register's garbage becoming a hub crash instead of a clear refusal."""
    _outcome(raw)


@given(json_values, st.sampled_from(KINDS))
def test_arbitrary_json_only_ever_yields_a_refusal(value: Any, kind: str) -> None:
    _outcome(json.dumps(value).encode())
    if isinstance(value, dict):
        _outcome(json.dumps(value | {"kind": kind}).encode())


def _locations(node: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key or index) of every value in the document."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield node, key
            yield from _locations(child)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield node, index
            yield from _locations(child)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GOLDEN), st.data())
def test_mutated_golden_transactions_only_ever_yield_a_verdict(name: str, data: Any) -> None:
    """Small edits of a valid transaction walk through every validation step; prevents any of
    them crashing on a shape it did not expect."""
    document = golden(name)
    for _ in range(data.draw(st.integers(1, 3))):
        locations = list(_locations(document))
        container, key = data.draw(st.sampled_from(locations))
        action = data.draw(st.sampled_from(["replace", "delete", "tweak-string", "add-key"]))
        if action == "replace":
            container[key] = data.draw(json_values)
        elif action == "delete":
            del container[key]
        elif action == "tweak-string" and isinstance(container[key], str):
            container[key] = (
                data.draw(st.sampled_from(["", "-", "0", "1e3", "x" * 300])) + container[key]
            )
        elif action == "add-key" and isinstance(container[key], dict):
            container[key][data.draw(st.text(max_size=8))] = data.draw(json_values)
    _outcome(document)


# --- property: card numbers are always refused ---------------------------------------------


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(13, 19))
    body = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
    return with_luhn_digit(draw(st.sampled_from("3456")) + body[1:])


def _written(pan: str, style: str) -> str:
    if style == "grouped" and len(pan) == 16:
        return " ".join(pan[i : i + 4] for i in range(0, 16, 4))
    if style == "dashed" and len(pan) == 16:
        return "-".join(pan[i : i + 4] for i in range(0, 16, 4))
    return pan


def _is_token(container: Any, key: Any, document: Doc) -> bool:
    return key == "token" and any(container is t for t in document.get("tenders", []))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(GOLDEN),
    card_numbers(),
    st.sampled_from(["plain", "grouped", "dashed"]),
    st.sampled_from(["replace", "embed", "number", "key"]),
    st.data(),
)
def test_a_card_number_injected_anywhere_but_the_token_is_refused(
    name: str, pan: str, style: str, how: str, data: Any
) -> None:
    """The PCI property, over every location of every example and several spellings."""
    document = golden(name)
    container, key = data.draw(st.sampled_from(list(_locations(document))))
    assume(not _is_token(container, key, document))
    written = _written(pan, style)
    if how == "key" and not isinstance(container[key], dict):
        how = "replace"
    if how == "embed" and not isinstance(container[key], str):
        how = "replace"
    # Documented exemption: a GS1-valid 13/14-digit run written into a SKU is a barcode.
    barcode = key == "sku" and written == pan and len(pan) in (13, 14) and gs1_ok(pan)
    assume(not (barcode and how in ("replace", "embed")))
    if how == "key":
        container[key][written] = "x"
    elif how == "number":
        container[key] = int(pan)
    elif how == "embed":
        container[key] = f"{container[key]} | {written} | "
    else:
        container[key] = written
    error = refusal(document)
    assert error.code == ValidationCode.CARD_NUMBER_REFUSED
    assert pan not in str(error)
    assert written not in str(error)


@given(card_numbers())
def test_a_card_number_in_the_token_is_never_refused(pan: str) -> None:
    document = changed("sale_card_customer_vat_included", _set("tenders.0.token", pan))
    assert isinstance(validate(document, max_bytes=MAX).txn, Sale)


# --- properties: totals --------------------------------------------------------------------

PLACES = {"USD": 2, "EUR": 2, "JPY": 0, "KWD": 3}

# (quantity or weight, unit_price, amount, [discount amounts], tax amount or None)
LineSpec = tuple[str, str, str, list[str], str | None]


def basket_document(
    kind: str,
    currency: str,
    lines: list[LineSpec],
    *,
    tax_included: bool,
    returned: list[LineSpec] | None = None,
    cash_extra: Decimal = Decimal(0),
) -> Doc:
    """A transaction whose figures are computed here, from the documented rules."""
    places = PLACES[currency]

    def line_docs(specs: list[LineSpec], first_no: int) -> list[Doc]:
        out = []
        for n, (measure, price, amount, discounts, tax) in enumerate(specs, start=first_no):
            line: Doc = {"line_no": n, "sku": f"SKU-{n}", "unit_price": price, "amount": amount}
            if "." in measure and n % 2:
                line["weight"] = {"value": measure, "unit": "kg"}
            else:
                line["quantity"] = measure
            if discounts:
                line["discounts"] = [{"description": "promo", "amount": d} for d in discounts]
            if tax is not None:
                line["tax"] = {"code": "T", "amount": tax}
            out.append(line)
        return out

    def sums(specs: list[LineSpec]) -> tuple[Decimal, Decimal, Decimal]:
        return (
            sum((Decimal(s[2]) for s in specs), Decimal(0)),
            sum((Decimal(d) for s in specs for d in s[3]), Decimal(0)),
            sum((Decimal(s[4]) for s in specs if s[4] is not None), Decimal(0)),
        )

    subtotal, discounts, tax = sums(lines)
    if returned is not None:
        r_subtotal, r_discounts, r_tax = sums(returned)
        subtotal, discounts, tax = subtotal - r_subtotal, discounts - r_discounts, tax - r_tax
    total = subtotal - discounts + (Decimal(0) if tax_included else tax)
    due = abs(total)
    tenders: list[Doc] = []
    if due:
        card = half_up(due / 2, places)
        if card:
            tenders.append({"type": "card", "amount": str(card)})
        cash = due - card + cash_extra
        if cash:
            tenders.append({"type": "cash", "amount": str(cash)})
            if cash_extra:
                tenders[-1]["change"] = str(cash_extra)
    unit = Decimal(1).scaleb(-places)

    def fmt(value: Decimal) -> str:
        return str(value.quantize(unit))

    document: Doc = {
        "kind": kind,
        "txn_id": "T-1",
        "store_id": "store-042",
        "lane_id": "lane-02",
        "operator_id": "op-1",
        "register_time": "2026-05-01T10:15:00+02:00",
        "currency": currency,
        "tenders": tenders,
        "totals": {
            "subtotal": fmt(subtotal),
            "discount_total": fmt(discounts),
            "tax_total": fmt(tax),
            "total": fmt(total),
            "tendered": fmt(sum((Decimal(t["amount"]) for t in tenders), Decimal(0))),
            "change": fmt(sum((Decimal(t.get("change", 0)) for t in tenders), Decimal(0))),
        },
    }
    if tax_included:
        document["tax_included"] = True
    if kind == "exchange":
        document["reason"] = "exchange"
        document["returned_lines"] = line_docs(returned or [], 1)
        document["sold_lines"] = line_docs(lines, 1 + len(returned or []))
    else:
        document["lines"] = line_docs(lines, 1)
        if kind == "return":
            document["reason"] = "return"
    return document


@st.composite
def line_specs(draw: st.DrawFn, places: int) -> LineSpec:
    unit = Decimal(1).scaleb(-places)
    if draw(st.booleans()):
        measure = Decimal(draw(st.integers(1, 12)))
    else:
        measure = Decimal(draw(st.integers(1, 5000))).scaleb(-3)
    price = Decimal(draw(st.integers(0, 10**6))).scaleb(-draw(st.integers(0, places + 2)))
    amount = half_up(measure * price, places)
    discounts: list[Decimal] = []
    for _ in range(draw(st.integers(0, 2))):
        room = amount - sum(discounts, Decimal(0))
        if room > 0:
            discounts.append(Decimal(draw(st.integers(0, int(room / unit)))) * unit)
    tax = None
    if draw(st.booleans()):
        tax = Decimal(draw(st.integers(0, 10**5))) * unit
    return (
        str(measure),
        str(price),
        str(amount),
        [str(d) for d in discounts],
        None if tax is None else str(tax),
    )


@st.composite
def baskets(draw: st.DrawFn) -> Doc:
    kind = draw(st.sampled_from(["sale", "return", "exchange"]))
    currency = draw(st.sampled_from(sorted(PLACES)))
    places = PLACES[currency]
    lines = draw(st.lists(line_specs(places), min_size=1, max_size=5))
    returned = (
        draw(st.lists(line_specs(places), min_size=1, max_size=3)) if kind == "exchange" else None
    )
    extra = Decimal(draw(st.integers(0, 5000))).scaleb(-places) if kind == "sale" else Decimal(0)
    return basket_document(
        kind,
        currency,
        lines,
        tax_included=draw(st.booleans()),
        returned=returned,
        cash_extra=extra,
    )


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(baskets())
def test_a_consistent_basket_is_always_accepted_and_matches_the_schema(document: Doc) -> None:
    """Prevents refusing correct receipts: any basket whose figures follow the documented
    rules (rounding, discounts, tax in or out, split and cash tenders, exchanges either way)
    is accepted, and the published schema agrees."""
    accepted = validate(document, max_bytes=MAX)
    assert accepted.txn.kind == document["kind"]
    SCHEMA.validate(document)


def _money_locations(document: Doc) -> Iterator[tuple[Doc, str, bool]]:
    """(container, key, may be negative) of every money figure that takes part in a total."""
    signed = document["kind"] == "exchange"
    for name in ("lines", "returned_lines", "sold_lines"):
        for line in document.get(name, []):
            yield line, "amount", False
            if "." not in line.get("quantity", "."):
                yield line, "unit_price", False  # integer quantity: a unit moves the amount
            for discount in line.get("discounts", []):
                yield discount, "amount", False
            if "tax" in line:
                yield line["tax"], "amount", False
    for key in ("subtotal", "discount_total", "tax_total", "total"):
        yield document["totals"], key, signed
    yield document["totals"], "tendered", False
    yield document["totals"], "change", False
    for tender in document["tenders"]:
        yield tender, "amount", False
        if tender["type"] == "cash":
            yield tender, "change", False


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(baskets(), st.data())
def test_one_minor_unit_off_anywhere_is_a_totals_mismatch(document: Doc, data: Any) -> None:
    """Prevents a figure that is off by one cent (a rounding bug, a lost discount) from being
    posted: every money field takes part in a check that catches it."""
    places = PLACES[document["currency"]]
    unit = Decimal(1).scaleb(-places)
    container, key, signed = data.draw(st.sampled_from(list(_money_locations(document))))
    value = Decimal(container.get(key, "0"))
    step = data.draw(st.sampled_from([unit, -unit]))
    # Stay inside what the format allows, so that only the arithmetic can object.
    assume(signed or value + step >= 0)
    assume(not (key == "amount" and "type" in container and value + step == 0))
    container[key] = str(value + step)
    error = refusal(document)
    assert error.code == ValidationCode.TOTALS_MISMATCH, error


# --- property: the card scan's shortcut never skips a card number --------------------------

_digitish = st.text(st.sampled_from("0123456789 -.eE+４x\\"), min_size=0, max_size=40)
# A card number as a JSON number at any scale: 0.0000004111111111111111 is read back as
# 4.111111111111111E-7 by the scan.
_card_as_number = st.builds(
    lambda pan, places, sign: Decimal(f"{sign}{pan}").scaleb(-places),
    card_numbers(),
    st.integers(-3, 30),
    st.sampled_from(["", "-"]),
)
_card_in_text = st.builds(
    lambda before, pan, style, after: before + _written(pan, style) + after,
    _digitish,
    card_numbers(),
    st.sampled_from(["plain", "grouped", "dashed"]),
    _digitish,
)
digit_documents = st.recursive(
    _digitish | _card_as_number | _card_in_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_digitish, children, max_size=4)
    ),
    max_leaves=12,
)


def _dump(value: Any, *, plain_numbers: bool) -> str:
    """JSON text; a Decimal as a number, in plain notation (0.0000004111111111111111) or as
    Python writes it (4.111111111111111E-7)."""
    if isinstance(value, Decimal):
        return format(value, "f") if plain_numbers else str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v, plain_numbers=plain_numbers) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"{json.dumps(k, ensure_ascii=False)}: {_dump(v, plain_numbers=plain_numbers)}"
                for k, v in value.items()
            )
            + "}"
        )
    return json.dumps(value, ensure_ascii=False)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=400)
@given(digit_documents, st.booleans(), st.booleans())
@example({"a": Decimal("0.00000054111111111111111")}, True, False)
def test_documents_the_card_scan_skips_have_no_card_number_in_them(
    document: Any, plain_numbers: bool, escaped: bool
) -> None:
    """Validation skips the per-value card scan when neither the raw text nor the parser's
    report can hold a candidate (it costs a third of a sale's validation). Prevents the
    shortcut ever letting through what the full scan refuses: digits in numbers Decimal
    writes in exponent form, escapes, grouped and full-width digits, keys."""
    from edge.outbox.validate import _may_hold_card_number, _parse, _scan

    text = _dump(document, plain_numbers=plain_numbers)
    if escaped:  # full-width digits as \uff14
        text = text.encode("ascii", "backslashreplace").decode()
    parsed = _parse(text)
    refused: str | None = None
    try:
        _scan(parsed.tree)
    except TransactionRejected as error:
        refused = error.code
    if refused is not None:
        assert refused == ValidationCode.CARD_NUMBER_REFUSED
        assert parsed.exponent_numbers or _may_hold_card_number(text), text


@settings(max_examples=600)
@given(
    st.sampled_from(sorted(DECIMAL_FIELDS)),
    st.integers(min_value=0, max_value=4),
    st.text(alphabet="-0123456789.e+ ", max_size=18)
    | st.from_regex(r"-?(0|[1-9][0-9]{0,13})(\.[0-9]{1,7})?", fullmatch=True),
)
@example("quantity", 3, "0.000")
@example("amount", 2, "-0")
@example("amount", 0, "5.0")
@example("amount", 2, "1234567890123")
def test_the_fast_decimal_check_accepts_exactly_what_the_reasoned_one_does(
    key: str, places: int, written: str
) -> None:
    """Step 7's common case is one pattern per field; the reasons come from a second pass
    only when it fails. The two must agree on every string, or a figure would be accepted
    that the rules refuse (or refused with no reason to give)."""
    from edge.outbox.validate import _decimal_problem, _fine_pattern

    rule = DECIMAL_FIELDS[key]
    fine = _fine_pattern(rule, places).fullmatch(written) is not None
    assert fine == (_decimal_problem(key, written, rule, places, "XXX") is None), written
