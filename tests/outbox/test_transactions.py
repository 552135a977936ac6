"""The transaction model: golden examples, canonical encoding, JSON Schema, outbox helpers.

The JSON files under data/ are the protocol's examples (docs/protocol.md shows them): one or
more per kind, each a transaction the hub must accept exactly as written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from edge.outbox.transactions import (
    KINDS,
    Exchange,
    Return,
    Sale,
    Transaction,
    Void,
    customer_key,
    decode_transaction,
    depends_on,
    encode_transaction,
    event_type,
    filed,
    minor_unit_digits,
    read_filing,
    transaction_json_schema,
)

DATA = Path(__file__).parent / "data"
GOLDEN = sorted(path.stem for path in DATA.glob("*.json"))


def golden(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return document


def decoded(document: dict[str, Any]) -> Transaction:
    return decode_transaction(json.dumps(document).encode())


def test_every_kind_has_a_golden_example() -> None:
    """Prevents a kind shipping without a protocol example for register integrators."""
    assert {golden(name)["kind"] for name in GOLDEN} == set(KINDS)


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_example_survives_the_outbox_encoding_unchanged(name: str) -> None:
    """The outbox stores and sends the canonical encoding. Prevents a figure changing on the
    way to the ERP: "2.50" must stay "2.50" (no float, no lost scale), times keep their
    offset, and nothing is added or dropped."""
    document = golden(name)
    txn = decoded(document)
    assert txn.kind == document["kind"]
    assert json.loads(encode_transaction(txn)) == document


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_example_conforms_to_the_published_json_schema(name: str) -> None:
    """Prevents the schema in docs/ from refusing what the hub accepts (integrators validate
    against it before sending)."""
    schema = transaction_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(golden(name))


def test_published_schema_says_money_is_a_string() -> None:
    """Prevents the docs from inviting floats: the hub refuses a JSON number for an amount,
    so the schema must too."""
    document = golden("sale_cash")
    document["totals"]["total"] = 13.32
    validator = jsonschema.Draft202012Validator(transaction_json_schema())
    assert not validator.is_valid(document)


def test_published_schema_refuses_unknown_kind_and_unknown_fields() -> None:
    """Prevents a schema so loose that an integrator's typo validates locally and is refused
    by the hub."""
    validator = jsonschema.Draft202012Validator(transaction_json_schema())
    layaway = golden("sale_cash") | {"kind": "layaway"}
    typo = golden("sale_cash") | {"tenderd": "20.00"}
    assert not validator.is_valid(layaway)
    assert not validator.is_valid(typo)


@pytest.mark.parametrize("kind", KINDS)
def test_event_type_is_versioned_per_kind(kind: str) -> None:
    """The cloud routes on the CloudEvents type; prevents two kinds sharing one, or a type
    without its schema version."""
    document = next(golden(name) for name in GOLDEN if golden(name)["kind"] == kind)
    assert event_type(decoded(document)) == f"com.storeedge.{kind}.v1"


def test_return_waits_for_its_original_sale() -> None:
    """Prevents the ERP receiving a refund before the sale it refunds."""
    document = golden("return_with_receipt")
    txn = decoded(document)
    assert isinstance(txn, Return)
    assert depends_on(txn) == (document["original"]["txn_id"],)


def test_exchange_waits_for_its_original_sale() -> None:
    document = golden("exchange_customer_pays")
    txn = decoded(document)
    assert isinstance(txn, Exchange)
    assert depends_on(txn) == (document["original"]["txn_id"],)


def test_post_void_waits_for_the_transaction_it_voids() -> None:
    """Prevents a void reaching the ERP before there is anything to void."""
    document = golden("void_post")
    txn = decoded(document)
    assert isinstance(txn, Void)
    assert depends_on(txn) == (document["voided"]["txn_id"],)


def test_sale_naming_a_customer_waits_for_the_customer_record() -> None:
    """Prevents a sale referring to a customer the ERP has not been told about."""
    document = golden("sale_card_customer_vat_included")
    txn = decoded(document)
    assert isinstance(txn, Sale)
    assert depends_on(txn) == ("customer:" + document["customer"]["customer_id"],)
    assert customer_key(document["customer"]["customer_id"]) in depends_on(txn)


def test_return_with_original_and_customer_waits_for_both_original_first() -> None:
    document = golden("return_with_receipt") | {"customer": {"customer_id": "C-1"}}
    assert depends_on(decoded(document)) == (document["original"]["txn_id"], "customer:C-1")


@pytest.mark.parametrize(
    "name", ["sale_cash", "void_abandoned_basket", "no_sale", "paid_in", "till_close"]
)
def test_independent_transactions_wait_for_nothing(name: str) -> None:
    """Prevents an anonymous sale or a cash movement being held back behind unrelated work."""
    assert depends_on(decoded(golden(name))) == ()


def test_a_txn_id_cannot_impersonate_a_customer_key() -> None:
    """Transactions and customer records share the outbox's key space; prevents a register's
    txn_id "customer:C-1" colliding with the customer record C-1."""
    document = golden("sale_cash") | {"txn_id": "customer:C-1"}
    with pytest.raises(msgspec.ValidationError, match="txn_id"):
        decoded(document)


@pytest.mark.parametrize(
    ("currency", "digits"), [("EUR", 2), ("USD", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3)]
)
def test_minor_units_follow_iso_4217(currency: str, digits: int) -> None:
    """Prevents yen amounts being required to have cents, or dinar amounts losing a digit."""
    assert minor_unit_digits(currency) == digits


def test_transactions_are_immutable() -> None:
    """An accepted transaction is a record; prevents a later stage editing what was acked."""
    txn = decoded(golden("sale_cash"))
    with pytest.raises(AttributeError):
        txn.txn_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", GOLDEN)
@pytest.mark.parametrize("customer", [False, True])
def test_a_stored_transaction_s_filing_files_it_as_the_transaction_does(
    name: str, customer: bool
) -> None:
    """The sender checks each row against its payload through the light :class:`Filing`, not
    a whole decode: it must give the key, kind, event type, lane and dependencies the intake
    filed the transaction under, for every kind, with and without a customer."""
    document = golden(name)
    if customer and document["kind"] in ("sale", "return", "exchange"):
        document["customer"] = {"customer_id": "C-9"}
    txn = decoded(document)
    assert filed(read_filing(encode_transaction(txn))) == filed(txn)
    assert filed(txn).depends_on == depends_on(txn)
