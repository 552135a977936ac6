"""The record service over real HTTP: 204 + Location, upsert by external id exactly once (in any
case), nsError refusals with o:errorDetails, PATCH, DELETE and !transform."""

from __future__ import annotations

import re
from decimal import Decimal

from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim
from tests.sim.netsuite.helpers import Ns, cash_sale

LOCATION = re.compile(r"http://127\.0\.0\.1:\d+/services/rest/record/v1/(\w+)/(\d+)")


def located(location: str) -> tuple[str, int]:
    match = LOCATION.fullmatch(location)
    assert match, location
    return match[1], int(match[2])


async def test_create_answers_204_with_the_location_of_the_new_record(
    ns: Ns, sim: NetSuiteSim
) -> None:
    reply = await ns.call("POST", "/record/v1/cashsale", cash_sale(sim, memo="first"))
    assert reply.status == 204, reply.body
    assert reply.body is None
    rtype, record_id = located(reply.headers["Location"])
    assert rtype == "cashSale", "the type is named in its canonical spelling"
    got = await ns.call("GET", f"/record/v1/cashSale/{record_id}")
    assert got.status == 200
    assert got.body["memo"] == "first"
    assert got.body["id"] == str(record_id)
    assert got.body["total"] == 8.25
    assert got.body["tranId"].startswith("CS")


async def test_upsert_creates_once_then_updates_the_same_record(ns: Ns, sim: NetSuiteSim) -> None:
    first = await ns.call("PUT", "/record/v1/cashSale/eid:POS-1", cash_sale(sim, memo="a"))
    again = await ns.call("PUT", "/record/v1/cashSale/eid:POS-1", cash_sale(sim, memo="b"))
    assert (first.status, again.status) == (204, 204)
    assert first.headers["Location"] == again.headers["Location"]
    assert sim.count("cashSale", "POS-1") == 1
    assert not sim.duplicates()
    record = sim.record("cashSale", "POS-1")
    assert record is not None
    assert record.fields["memo"] == "b"
    assert record.revision == 2


async def test_external_ids_are_case_insensitive(ns: Ns, sim: NetSuiteSim) -> None:
    first = await ns.call("PUT", "/record/v1/cashSale/eid:Pos-Abc-1", cash_sale(sim))
    second = await ns.call("PUT", "/record/v1/cashSale/eid:POS-ABC-1", cash_sale(sim))
    assert first.headers["Location"] == second.headers["Location"]
    assert sim.count("cashSale", "pos-abc-1") == 1
    got = await ns.call("GET", "/record/v1/cashSale/eid:pos-abc-1")
    assert got.status == 200
    assert got.body["externalId"] == "Pos-Abc-1", "the spelling first written is kept"
    duplicate = await ns.call("POST", "/record/v1/cashSale", cash_sale(sim, "POS-abc-1"))
    assert duplicate.status == 400
    assert duplicate.error_code() == "USER_ERROR"
    assert sim.count("cashSale", "POS-ABC-1") == 1


async def test_the_same_external_id_may_name_records_of_other_types(
    ns: Ns, sim: NetSuiteSim
) -> None:
    await ns.call("PUT", "/record/v1/cashSale/eid:T-1", cash_sale(sim))
    reply = await ns.call("PUT", "/record/v1/invoice/eid:T-1", cash_sale(sim))
    assert reply.status == 204
    assert sim.count("cashSale", "T-1") == sim.count("invoice", "T-1") == 1


async def test_an_unknown_item_is_refused_with_its_path(ns: Ns, sim: NetSuiteSim) -> None:
    body = cash_sale(sim, "POS-2")
    body["item"]["items"][1]["item"] = {"id": "999999"}
    reply = await ns.call("PUT", "/record/v1/cashSale/eid:POS-2", body)
    assert reply.status == 400
    assert reply.headers["Content-Type"].startswith("application/vnd.oracle.resource+json")
    assert reply.body["status"] == 400
    assert reply.body["title"] == "Bad Request"
    assert reply.error_code() == "INVALID_CONTENT"
    assert reply.error_path() == "item.items[1].item"
    assert "Invalid Field Value 999999" in reply.body["o:errorDetails"][0]["detail"]
    assert sim.count("cashSale", "POS-2") == 0


async def test_missing_mandatory_fields_are_user_errors(ns: Ns, sim: NetSuiteSim) -> None:
    body = cash_sale(sim)
    del body["entity"]
    reply = await ns.call("POST", "/record/v1/cashSale", body)
    assert (reply.status, reply.error_code(), reply.error_path()) == (400, "USER_ERROR", "entity")
    assert "Please enter value(s) for: Customer" in reply.body["o:errorDetails"][0]["detail"]
    not_json = await ns.call("POST", "/record/v1/cashSale", raw=b"{nope")
    assert (not_json.status, not_json.error_code()) == (400, "INVALID_CONTENT")


async def test_locations_and_payment_methods_are_checked_when_seeded(
    ns: Ns, sim: NetSuiteSim
) -> None:
    sim.records.locations = {1, 2}
    sim.records.payment_methods = {7}
    good = cash_sale(sim, location={"id": "2"}, paymentMethod={"id": "7"})
    assert (await ns.call("PUT", "/record/v1/cashSale/eid:L-1", good)).status == 204
    wrong_place = cash_sale(sim, location={"id": "3"})
    reply = await ns.call("PUT", "/record/v1/cashSale/eid:L-2", wrong_place)
    assert (reply.status, reply.error_path()) == (400, "location")
    wrong_tender = cash_sale(sim, paymentMethod={"id": "1"})
    reply = await ns.call("PUT", "/record/v1/cashSale/eid:L-3", wrong_tender)
    assert (reply.status, reply.error_path()) == (400, "paymentMethod")


async def test_seeded_customers_are_found_by_external_id(ns: Ns, sim: NetSuiteSim) -> None:
    customer = sim.add_customer(first_name="Ana", last_name="Ng", email="ana@example.com")
    body = cash_sale(sim, entity={"id": str(customer)})
    reply = await ns.call("POST", "/record/v1/cashSale", body)
    assert reply.status == 204
    sim.add_customer("ACME", external_id="CUST-ACME")
    by_eid = cash_sale(sim, entity={"externalId": "cust-acme"})
    assert (await ns.call("POST", "/record/v1/cashSale", by_eid)).status == 204
    got = await ns.call("GET", "/record/v1/customer/eid:CUST-ACME")
    assert got.body["refName"] == "ACME"


async def test_patch_changes_fields_and_delete_removes(ns: Ns, sim: NetSuiteSim) -> None:
    await ns.call("PUT", "/record/v1/cashSale/eid:P-1", cash_sale(sim, memo="old"))
    patched = await ns.call("PATCH", "/record/v1/cashSale/eid:P-1", {"memo": "new"})
    assert patched.status == 204
    record = sim.record("cashSale", "P-1")
    assert record is not None
    assert record.fields["memo"] == "new"
    bad = await ns.call("PATCH", f"/record/v1/cashSale/{record.id}", {"memo": 5})
    assert (bad.status, bad.error_path()) == (400, "memo")
    deleted = await ns.call("DELETE", f"/record/v1/cashSale/{record.id}")
    assert deleted.status == 204
    gone = await ns.call("GET", "/record/v1/cashSale/eid:P-1")
    assert (gone.status, gone.error_code()) == (404, "NONEXISTENT_ID")
    assert sim.count("cashSale", "P-1") == 1, "the ledger counts creations ever made"


async def test_put_takes_only_external_ids(ns: Ns, sim: NetSuiteSim) -> None:
    reply = await ns.call("PUT", "/record/v1/cashSale/5", cash_sale(sim))
    assert (reply.status, reply.error_code()) == (400, "INVALID_PARAMETER")
    bad_chars = await ns.call("PUT", "/record/v1/cashSale/eid:a.b", cash_sale(sim))
    assert (bad_chars.status, bad_chars.error_code()) == (400, "INVALID_PARAMETER")
    unknown = await ns.call("POST", "/record/v1/spaceship", {})
    assert unknown.status == 400


async def test_transform_makes_a_linked_record(ns: Ns, sim: NetSuiteSim) -> None:
    created = await ns.call("PUT", "/record/v1/cashSale/eid:S-1", cash_sale(sim))
    _, sale_id = located(created.headers["Location"])
    reply = await ns.call(
        "POST",
        f"/record/v1/cashSale/{sale_id}/!transform/cashRefund",
        {"externalId": "R-1", "memo": "return"},
    )
    assert reply.status == 204, reply.body
    rtype, refund_id = located(reply.headers["Location"])
    assert rtype == "cashRefund"
    refund = sim.record("cashRefund", "R-1")
    assert refund is not None
    assert refund.id == refund_id
    assert refund.created_from == ("cashSale", sale_id)
    assert refund.total == Decimal("8.25")
    again = await ns.call(
        "POST", f"/record/v1/cashSale/{sale_id}/!transform/cashRefund", {"externalId": "r-1"}
    )
    assert (again.status, again.error_code()) == (400, "USER_ERROR")
    assert sim.count("cashRefund", "R-1") == 1
    unsupported = await ns.call("POST", f"/record/v1/cashSale/{sale_id}/!transform/invoice", {})
    assert (unsupported.status, unsupported.error_code()) == (400, "INVALID_PARAMETER")


async def test_control_api_serves_the_ledger(
    ns: Ns, sim: NetSuiteSim, server: NetSuiteServer
) -> None:
    await ns.call("PUT", "/record/v1/cashSale/eid:C-1", cash_sale(sim))
    await ns.call("PUT", "/record/v1/cashSale/eid:c-1", cash_sale(sim))
    async with ns.session.get(f"{server.url}/_sim/ledger") as response:
        ledger = await response.json()
    assert {"type": "cashSale", "externalId": "c-1", "created": 1} in ledger["records"]
    assert ledger["duplicates"] == []
