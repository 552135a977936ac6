"""Posting plans: which NetSuite records a store transaction becomes, and the pre-flight rules
that park it before anything is sent."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.outbox.transactions import Transaction, decode_transaction
from edge.sim.registers import CATALOGUE, make_sale
from edge.uplink.netsuite.mapping import Mapping, Plan, Preflight, external_id, plan_postings

DATA = Path(__file__).parents[1] / "outbox" / "data"

MAPPING = Mapping(
    subsidiary_id="1",
    default_location_id="7",
    locations={"store-042": "42"},
    walk_in_customer_id="900",
    items={sku: str(500 + n) for n, (sku, *_) in enumerate(CATALOGUE)}
    | {"JP-TEA-500": "610", "SKU-COFFEE-250": "500", "SKU-MUG": "501"}
    | {"SHIRT-M": "620", "SHIRT-L": "621"},
    discount_item_id="777",
    payment_methods={"cash": "1", "card": "2", "gift_card": "3", "store_credit": "4"},
)


def golden(name: str, **changes: Any) -> Transaction:
    document = json.loads((DATA / f"{name}.json").read_text()) | changes
    return decode_transaction(json.dumps(document).encode())


def body_json(plan: Plan, index: int = 0) -> dict[str, Any]:
    """A posting's body as NetSuite receives it (decimals as JSON numbers)."""
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(plan.postings[index].body))
    return decoded


def test_single_tender_sale_is_one_cash_sale_at_the_stores_location() -> None:
    plan = plan_postings(golden("sale_card_customer_vat_included"), MAPPING)
    (posting,) = plan.postings
    assert posting.record_type == "cashSale"
    body = body_json(plan)
    assert body["externalId"] == posting.external_id
    assert body["location"] == {"id": "42"}
    assert body["subsidiary"] == {"id": "1"}
    assert body["tranDate"] == "2026-05-01"
    assert body["paymentMethod"] == {"id": "2"}
    assert [(ln["item"]["id"], ln["quantity"], ln["amount"]) for ln in body["item"]["items"]] == [
        ("500", 3, 13.5),
        ("501", 1, 9.9),
    ]
    raw = msgspec.json.encode(plan.postings[0].body).decode()
    assert '"amount":13.50' in raw, "money goes out with the register's exact digits"
    assert plan.customer is not None
    assert plan.customer.email == "ana@example.com"
    assert "entity" not in body, "the shell resolves the named customer"


def test_external_id_is_the_sanitised_transaction_id_and_stable() -> None:
    txn = golden("sale_cash")
    first, second = plan_postings(txn, MAPPING), plan_postings(txn, MAPPING)
    assert first.postings[0].external_id == second.postings[0].external_id
    assert first.postings[0].external_id.replace("-", "").replace("_", "").isalnum()


def test_split_tender_is_an_invoice_with_one_payment_per_tender_net_of_change() -> None:
    plan = plan_postings(golden("sale_jpy_split_tender"), MAPPING)
    kinds = [p.record_type for p in plan.postings]
    assert kinds == ["invoice", "customerPayment", "customerPayment"]
    payments = plan.postings[1:]
    assert [p.apply_to for p in payments] == [0, 0]
    assert [p.amount_applied for p in payments] == [Decimal(500), Decimal(96)]
    assert sum(p.amount_applied for p in payments) == Decimal(596)
    assert len({p.external_id for p in plan.postings}) == 3
    assert body_json(plan, 1)["paymentMethod"] == {"id": "3"}
    assert body_json(plan, 0)["entity"] == {"id": "900"}, "anonymous: the walk-in customer"
    assert body_json(plan, 1)["customer"] == {"id": "900"}


def test_split_tender_as_one_cash_sale_when_configured() -> None:
    mapping = msgspec.structs.replace(MAPPING, split_tender="cash_sale")
    plan = plan_postings(golden("sale_jpy_split_tender"), mapping)
    assert [p.record_type for p in plan.postings] == ["cashSale"]


def test_unmapped_sku_parks_with_the_sku_named() -> None:
    txn = golden("sale_cash")
    mapping = msgspec.structs.replace(MAPPING, items={})
    with pytest.raises(Preflight) as caught:
        plan_postings(txn, mapping)
    assert caught.value.code == "NS_UNMAPPED_ITEMS"
    for line in txn.lines:  # type: ignore[union-attr]
        assert line.sku in caught.value.message


def test_unmapped_sku_posts_against_the_catch_all_item_when_one_is_set() -> None:
    mapping = msgspec.structs.replace(MAPPING, items={}, unknown_item_id="999")
    body = body_json(plan_postings(golden("sale_cash"), mapping))
    sold = [ln for ln in body["item"]["items"] if ln["item"]["id"] != MAPPING.discount_item_id]
    assert {ln["item"]["id"] for ln in sold} == {"999"}
    assert all("not in the NetSuite item map" in ln["description"] for ln in sold)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"payment_methods": {}}, "NS_UNMAPPED_TENDERS"),
        ({"subsidiary_id": ""}, "NS_UNMAPPED_SUBSIDIARY"),
        ({"default_location_id": "", "locations": {}}, "NS_UNMAPPED_LOCATION"),
        ({"walk_in_customer_id": ""}, "NS_UNMAPPED_CUSTOMER"),
        ({"currencies": {"USD": "2"}}, "NS_UNMAPPED_CURRENCY"),
        ({"send_tax_codes": True}, "NS_UNMAPPED_TAX"),
    ],
)
def test_preflight_names_what_is_missing(change: dict[str, Any], code: str) -> None:
    with pytest.raises(Preflight) as caught:
        plan_postings(golden("sale_jpy_split_tender"), msgspec.structs.replace(MAPPING, **change))
    assert caught.value.code == code


def test_return_links_its_original_and_follows_the_configured_record() -> None:
    txn = golden("return_with_receipt")
    plan = plan_postings(txn, MAPPING)
    (refund,) = plan.postings
    assert refund.record_type == "cashRefund"
    assert refund.created_from == txn.original.txn_id  # type: ignore[union-attr]
    memo = plan_postings(txn, msgspec.structs.replace(MAPPING, return_record="creditMemo"))
    assert memo.postings[0].record_type == "creditMemo"
    assert "paymentMethod" not in memo.postings[0].body


def test_a_return_authorization_links_the_sale_and_the_refund_is_created_from_it() -> None:
    txn = golden("return_with_receipt")
    rma_mapping = msgspec.structs.replace(
        MAPPING, return_authorization=True, return_record="creditMemo"
    )
    plan = plan_postings(txn, rma_mapping)
    rma, refund = plan.postings
    assert (rma.record_type, refund.record_type) == ("returnAuthorization", "creditMemo")
    assert rma.external_id == external_id(txn.txn_id, "-ra")
    assert rma.created_from == txn.original.txn_id  # type: ignore[union-attr]
    assert refund.created_from is None, "the link to the sale is on the authorization"
    assert refund.from_posting == 0
    assert plan.primary == 1, "the outbox records the refund's id"
    assert body_json(plan, 0)["item"] == body_json(plan, 1)["item"]
    exchange = plan_postings(golden("exchange_customer_pays"), rma_mapping)
    kinds = [p.record_type for p in exchange.postings]
    assert kinds == ["returnAuthorization", "creditMemo", "cashSale"]
    assert exchange.postings[1].from_posting == 0
    assert exchange.primary == 2


def test_exchange_is_a_refund_and_a_sale_with_distinct_external_ids() -> None:
    plan = plan_postings(golden("exchange_customer_pays"), MAPPING)
    assert [p.record_type for p in plan.postings] == ["cashRefund", "cashSale"]
    assert plan.postings[0].external_id != plan.postings[1].external_id
    assert plan.primary == 1


def test_post_void_parks_for_a_manual_void_unless_skipped() -> None:
    with pytest.raises(Preflight) as caught:
        plan_postings(golden("void_post"), MAPPING)
    assert caught.value.code == "NS_VOID_MANUAL"
    skipped = plan_postings(
        golden("void_post"), msgspec.structs.replace(MAPPING, void_action="skip")
    )
    assert skipped.not_posted
    assert not skipped.postings


@pytest.mark.parametrize("name", ["no_sale", "drawer_event", "paid_in", "paid_out", "till_close"])
def test_cash_management_is_not_an_erp_record(name: str) -> None:
    plan = plan_postings(golden(name), MAPPING)
    assert plan.not_posted
    assert not plan.postings


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_posted_lines_add_up_to_the_sale(seed: int) -> None:
    """Whatever the basket, the record's lines carry the sale's net amount to the cent, and
    the payments (if split) carry its total."""
    sale = make_sale(store_id="store-042", lane_id="lane-01", number=1, rng=random.Random(seed))
    txn = decode_transaction(json.dumps(sale).encode())
    plan = plan_postings(txn, MAPPING)
    lines = plan.postings[0].body["item"]["items"]
    posted = sum(Decimal(bytes(ln["amount"]).decode()) for ln in lines)
    assert posted == Decimal(sale["totals"]["subtotal"]) - Decimal(sale["totals"]["discount_total"])
    payments = [p.amount_applied for p in plan.postings[1:]]
    if payments:
        assert sum(payments) == Decimal(sale["totals"]["total"])
