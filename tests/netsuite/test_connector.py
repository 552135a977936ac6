"""The NetSuite connector against the NetSuite-shaped simulator over real HTTP: records posted
once however often they are sent, pre-flight parking, NetSuite's refusals kept whole, and
throttling, outages and faults classified as retry-later."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.outbox.policy import Delivered, Rejected, RetryLater
from edge.outbox.transactions import decode_transaction, encode_transaction
from edge.sim.netsuite.auth import OAuth2Client, TbaCredential
from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim, run_netsuite_sim
from edge.sim.registers import CATALOGUE, make_sale
from edge.uplink.base import Outbound
from edge.uplink.netsuite.connector import (
    NetSuiteConnector,
    OAuth2Credentials,
    RequestFailed,
    TbaCredentials,
)
from edge.uplink.netsuite.mapping import Mapping, external_id

DATA = Path(__file__).parents[1] / "outbox" / "data"
TBA = TbaCredential("ck", "cs", "tok", "ts")


@pytest.fixture
async def netsuite() -> AsyncIterator[NetSuiteServer]:
    async with run_netsuite_sim(NetSuiteSim("1234567", catalogue_size=200)) as server:
        yield server


def mapping_for(sim: NetSuiteSim, **changes: Any) -> Mapping:
    active = [n for n in range(1, 200) if sim.catalogue.is_active(n)]
    skus = [sku for sku, *_ in CATALOGUE] + ["JP-TEA-500", "SHIRT-M", "SHIRT-L"]
    fields: dict[str, Any] = {
        "subsidiary_id": "1",
        "default_location_id": "1",
        "walk_in_customer_id": sim.walk_in_customer_id(),
        "items": {sku: str(active[n]) for n, sku in enumerate(skus)},
        "discount_item_id": str(active[len(skus)]),
        "payment_methods": {"cash": "1", "card": "2", "gift_card": "3"},
    }
    return Mapping(**(fields | changes))


def connector(server: NetSuiteServer, **kwargs: Any) -> NetSuiteConnector:
    options: dict[str, Any] = {
        "base_url": server.url,
        "account_id": "1234567",
        "credentials": TbaCredentials("ck", "cs", "tok", "ts"),
        "mapping": mapping_for(server.sim),
        "timeout_s": 5.0,
    }
    return NetSuiteConnector(**(options | kwargs))


def outbound(document: dict[str, Any], attempts: int = 0) -> Outbound:
    txn = decode_transaction(json.dumps(document).encode())
    return Outbound(
        1, txn.txn_id, txn.kind, "t", txn.lane_id, encode_transaction(txn), 0.0, attempts
    )


def golden(name: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return document | changes


def sale(seed: int = 1) -> dict[str, Any]:
    return make_sale(store_id="store-042", lane_id="lane-01", number=seed, rng=random.Random(seed))


async def test_a_sale_is_one_cash_sale_however_often_it_is_sent(netsuite: NetSuiteServer) -> None:
    netsuite.sim.auth.tba[("ck", "tok")] = TBA
    ns = connector(netsuite)
    try:
        document = golden("sale_cash")
        first = await ns.deliver([outbound(document)])
        again = await ns.deliver([outbound(document, attempts=1)])
    finally:
        await ns.aclose()
    assert isinstance(first[0], Delivered)
    assert first[0].record_id.startswith("cashSale:")
    assert again == first, "the re-send updates the same record"
    assert netsuite.sim.count("cashSale", external_id(document["txn_id"])) == 1


async def test_split_tender_posts_an_invoice_and_applied_payments(netsuite: NetSuiteServer) -> None:
    netsuite.sim.auth.tba[("ck", "tok")] = TBA
    ns = connector(netsuite)
    try:
        document = golden("sale_jpy_split_tender")
        (outcome,) = await ns.deliver([outbound(document)])
        await ns.deliver([outbound(document, attempts=1)])
    finally:
        await ns.aclose()
    assert isinstance(outcome, Delivered), outcome
    assert outcome.record_id.startswith("invoice:")
    txn = document["txn_id"]
    assert netsuite.sim.count("invoice", external_id(txn)) == 1
    for n in (1, 2):
        assert netsuite.sim.count("customerPayment", external_id(txn, f"-p{n}")) == 1
    payments = netsuite.sim.records.records("customerPayment")
    invoice_id = int(outcome.record_id.split(":")[1])
    assert {int(p.fields["apply"]["items"][0]["doc"]["id"]) for p in payments} == {invoice_id}


async def test_a_customer_is_matched_by_email_never_duplicated(netsuite: NetSuiteServer) -> None:
    netsuite.sim.auth.tba[("ck", "tok")] = TBA
    ns = connector(netsuite)
    customer = {"customer_id": "C-10077", "email": "ana@example.com"}
    try:
        first = golden("sale_card_customer_vat_included")
        second = golden("sale_cash", customer=customer)
        outcomes = await ns.deliver([outbound(first)])
        outcomes += await ns.deliver([outbound(second)])
    finally:
        await ns.aclose()
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
    named = [c for c in netsuite.sim.records.records("customer") if c.fields.get("email")]
    assert len(named) == 1
    sales = netsuite.sim.records.records("cashSale")
    assert {int(s.fields["entity"]["id"]) for s in sales} == {named[0].id}


@pytest.mark.parametrize("authorization", [False, True], ids=["refund", "return-authorization"])
async def test_a_return_is_linked_to_its_original_sale(
    netsuite: NetSuiteServer, authorization: bool
) -> None:
    """The refund links the sale; with return authorizations the authorization links the sale
    and the refund (a credit memo here) is created from the authorization."""
    netsuite.sim.auth.tba[("ck", "tok")] = TBA
    record = "creditMemo" if authorization else "cashRefund"
    mapping = mapping_for(netsuite.sim, return_authorization=authorization, return_record=record)
    ns = connector(netsuite, mapping=mapping)
    original = golden("sale_cash")
    ret = golden("return_with_receipt")
    ret["original"] = {**ret["original"], "txn_id": original["txn_id"]}
    try:
        (sold,) = await ns.deliver([outbound(original)])
        (refunded,) = await ns.deliver([outbound(ret)])
        again = await ns.deliver([outbound(ret, attempts=1)])
    finally:
        await ns.aclose()
    assert isinstance(sold, Delivered)
    assert isinstance(refunded, Delivered), refunded
    assert again == [refunded], "a re-send updates the same records"
    (refund,) = netsuite.sim.records.records(record)
    assert refunded.record_id == f"{record}:{refund.id}"
    sale_id = int(sold.record_id.split(":")[1])
    if authorization:
        (rma,) = netsuite.sim.records.records("returnAuthorization")
        assert int(rma.fields["createdFrom"]["id"]) == sale_id
        assert int(refund.fields["createdFrom"]["id"]) == rma.id
    else:
        assert netsuite.sim.records.records("returnAuthorization") == []
        assert int(refund.fields["createdFrom"]["id"]) == sale_id


async def test_unmapped_sku_is_parked_before_anything_is_sent(netsuite: NetSuiteServer) -> None:
    ns = connector(netsuite, mapping=mapping_for(netsuite.sim, items={}))
    before = netsuite.sim.requests
    try:
        (outcome,) = await ns.deliver([outbound(sale())])
    finally:
        await ns.aclose()
    assert isinstance(outcome, Rejected)
    assert outcome.code == "NS_UNMAPPED_ITEMS"
    assert netsuite.sim.requests == before


async def test_netsuites_refusal_is_kept_whole(netsuite: NetSuiteServer) -> None:
    netsuite.sim.auth.tba[("ck", "tok")] = TBA
    good = mapping_for(netsuite.sim)
    bad = mapping_for(netsuite.sim, items=dict.fromkeys(good.items, "999999"))
    ns = connector(netsuite, mapping=bad)
    try:
        (outcome,) = await ns.deliver([outbound(sale())])
    finally:
        await ns.aclose()
    assert isinstance(outcome, Rejected)
    assert outcome.code == "INVALID_CONTENT"
    detail = outcome.detail["o:errorDetails"][0]
    assert detail["o:errorPath"].startswith("item.items[")


@pytest.mark.parametrize(("status", "kind"), [(429, "throttled"), (503, "server"), (500, "server")])
async def test_throttling_and_server_errors_are_retried_later(
    netsuite: NetSuiteServer, status: int, kind: str
) -> None:
    netsuite.sim.auth.tba[("ck", "tok")] = TBA
    netsuite.sim.script(status)
    ns = connector(netsuite)
    try:
        (outcome,) = await ns.deliver([outbound(sale())])
        (after,) = await ns.deliver([outbound(sale())])
    finally:
        await ns.aclose()
    assert isinstance(outcome, RetryLater)
    assert outcome.kind == kind
    assert isinstance(after, Delivered)


async def test_concurrency_is_bounded_and_401_under_load_is_throttling() -> None:
    sim = NetSuiteSim(
        "1234567", catalogue_size=200, concurrency=2, over_limit_status=401, latency_s=0.02
    )
    sim.auth.tba[("ck", "tok")] = TBA
    async with run_netsuite_sim(sim) as server:
        ns = connector(server, concurrency=2)
        try:
            outcomes = await ns.deliver([outbound(sale(n)) for n in range(12)])
        finally:
            await ns.aclose()
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
    assert sim.peak_inflight == 2, "the connector uses its whole allowance, never more"
    assert sim.refused_over_limit == 0

    greedy_sim = NetSuiteSim(
        "1234567", catalogue_size=200, concurrency=1, over_limit_status=401, latency_s=0.02
    )
    greedy_sim.auth.tba[("ck", "tok")] = TBA
    async with run_netsuite_sim(greedy_sim) as server:
        greedy = connector(server, concurrency=6)
        try:
            outcomes = await greedy.deliver([outbound(sale(n)) for n in range(12)])
        finally:
            await greedy.aclose()
    retried = [o for o in outcomes if isinstance(o, RetryLater)]
    assert greedy_sim.refused_over_limit > 0
    assert retried
    assert all(o.kind == "throttled" for o in retried), "the 401 quirk is not an auth failure"


async def test_wrong_secret_is_refused_and_retried_not_parked(netsuite: NetSuiteServer) -> None:
    netsuite.sim.auth.tba[("ck", "tok")] = TBA
    ns = connector(netsuite, credentials=TbaCredentials("ck", "WRONG", "tok", "ts"))
    try:
        (outcome,) = await ns.deliver([outbound(sale())])
    finally:
        await ns.aclose()
    assert isinstance(outcome, RetryLater)
    assert "INVALID_LOGIN" in outcome.reason
    assert netsuite.sim.auth.failures, "NetSuite's audit trail holds the cause"


async def test_unreachable_netsuite_is_a_connection_failure(
    free_port: Any,
) -> None:
    sim = NetSuiteSim("1234567", catalogue_size=10)
    ns = NetSuiteConnector(
        base_url=f"http://127.0.0.1:{free_port()}",
        account_id="1234567",
        credentials=TbaCredentials("ck", "cs", "tok", "ts"),
        mapping=mapping_for(sim),
    )
    try:
        (outcome,) = await ns.deliver([outbound(sale())])
    finally:
        await ns.aclose()
    assert isinstance(outcome, RetryLater)
    assert outcome.kind == "connection"


async def test_a_query_to_an_unreachable_netsuite_is_retry_later_not_a_raw_error(
    free_port: Any,
) -> None:
    """The catalogue and the reconciliation read through suiteql: a WAN fault must reach them
    as RequestFailed(RetryLater) (the catalogue then logs "unavailable" and backs off), not as
    an aiohttp exception that looks like a bug (found by the chaos suite)."""
    sim = NetSuiteSim("1234567", catalogue_size=10)
    ns = NetSuiteConnector(
        base_url=f"http://127.0.0.1:{free_port()}",
        account_id="1234567",
        credentials=TbaCredentials("ck", "cs", "tok", "ts"),
        mapping=mapping_for(sim),
    )
    try:
        with pytest.raises(RequestFailed) as failed:
            await ns.suiteql("SELECT id FROM item", background=True)
    finally:
        await ns.aclose()
    assert isinstance(failed.value.outcome, RetryLater)
    assert failed.value.outcome.kind == "connection"


async def test_oauth2_client_credentials_with_an_es256_certificate(
    netsuite: NetSuiteServer,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    netsuite.sim.auth.oauth2["cert-1"] = OAuth2Client("client-1", "cert-1", key.public_key())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ns = connector(netsuite, credentials=OAuth2Credentials("client-1", "cert-1", pem, "ES256"))
    try:
        outcomes = await ns.deliver([outbound(sale(n)) for n in range(3)])
    finally:
        await ns.aclose()
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
