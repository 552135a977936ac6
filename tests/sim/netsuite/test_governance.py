"""Governance and faults over real HTTP: the concurrency limit (429, or the 401 quirk), scripted
and seeded faults, an aborted answer after a commit, rejections by external id, and the control
API."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from edge.sim.netsuite.auth import TbaCredential
from edge.sim.netsuite.errors import INVALID_LOGIN_DETAIL
from edge.sim.netsuite.faults import Fault, FaultPlan, FaultProfile, FaultTarget
from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim, run_netsuite_sim
from tests.sim.netsuite.helpers import ACCOUNT, TBA, Clock, Ns, cash_sale


async def test_the_request_over_the_limit_is_refused_until_a_slot_frees(
    ns: Ns, sim: NetSuiteSim, server: NetSuiteServer
) -> None:
    assert sim.concurrency == 5
    sim.script(*[Fault.timeout(FaultTarget.RECORD)] * 5)
    hung = [asyncio.create_task(ns.call("GET", f"/record/v1/customer/{n}")) for n in range(1, 6)]
    await server.wait_until(lambda: sim.inflight == 5)

    refused = await ns.call("GET", "/record/v1/customer/1")
    assert refused.status == 429
    assert refused.body["title"] == "Too Many Requests"
    assert refused.error_code() == "CONCURRENCY_LIMIT_EXCEEDED"

    sim.over_limit_status = 401
    quirk = await ns.call("GET", "/record/v1/customer/1")
    assert quirk.status == 401
    assert quirk.body["o:errorDetails"][0]["detail"] == INVALID_LOGIN_DETAIL
    assert not sim.auth.failures, "the quirk is governance, not a refused login"
    assert sim.refused_over_limit == 2

    for task in hung:
        task.cancel()
    await asyncio.gather(*hung, return_exceptions=True)
    await server.wait_until(lambda: sim.inflight == 0)
    served = await ns.call("GET", "/record/v1/customer/1")
    assert served.status == 200
    assert sim.peak_inflight == 5


async def test_scripted_status_faults_touch_nothing(ns: Ns, sim: NetSuiteSim) -> None:
    sim.script(500, 503, 429, 401)
    statuses = []
    for _ in range(5):
        reply = await ns.call("PUT", "/record/v1/cashSale/eid:F-1", cash_sale(sim))
        statuses.append(reply.status)
        if reply.status != 204:
            assert reply.body["status"] == reply.status
            assert sim.count("cashSale", "F-1") == 0
    assert statuses == [500, 503, 429, 401, 204]
    assert sim.count("cashSale", "F-1") == 1
    assert not sim.auth.failures
    with pytest.raises(ValueError):
        sim.script(418)


async def test_faults_aim_at_their_target(ns: Ns, sim: NetSuiteSim) -> None:
    sim.script(Fault.server_error(502, FaultTarget.RECORD))
    query = await ns.call(
        "POST", "/query/v1/suiteql", {"q": "SELECT id FROM item"}, headers={"Prefer": "transient"}
    )
    assert query.status == 200, "the SuiteQL call passes the record fault by"
    record = await ns.call("GET", "/record/v1/customer/1")
    assert record.status == 502
    assert sim.faults.scripted == ()


async def test_reset_answers_nothing_and_commits_nothing(ns: Ns, sim: NetSuiteSim) -> None:
    sim.script(Fault.reset())
    with pytest.raises(aiohttp.ClientError):
        await ns.call("POST", "/record/v1/cashSale", cash_sale(sim, "RST-1"))
    assert sim.count("cashSale", "RST-1") == 0
    assert sim.requests == 1


async def test_aiohttp_resends_an_idempotent_request_after_a_reset(
    ns: Ns, sim: NetSuiteSim
) -> None:
    # Worth knowing for the connector: aiohttp itself retries a PUT whose connection dropped.
    sim.script(Fault.reset())
    reply = await ns.call("PUT", "/record/v1/cashSale/eid:RST-2", cash_sale(sim))
    assert reply.status == 204
    assert sim.requests == 2
    assert sim.count("cashSale", "RST-2") == 1


async def test_a_lost_answer_after_the_commit_is_safe_to_resend_as_upsert(
    ns: Ns, sim: NetSuiteSim
) -> None:
    sim.script(Fault.commit_then_lose(FaultTarget.RECORD))
    with pytest.raises(aiohttp.ClientError):
        await ns.call("POST", "/record/v1/cashSale", cash_sale(sim, "LOST-1"))
    assert sim.count("cashSale", "LOST-1") == 1, "committed although the client never heard"
    again = await ns.call("POST", "/record/v1/cashSale", cash_sale(sim, "LOST-1"))
    assert (again.status, again.error_code()) == (400, "USER_ERROR")
    upsert = await ns.call("PUT", "/record/v1/cashSale/eid:LOST-1", cash_sale(sim))
    assert upsert.status == 204
    assert sim.count("cashSale", "LOST-1") == 1
    assert not sim.duplicates()


async def test_a_rejected_external_id_gets_the_chosen_error(ns: Ns, sim: NetSuiteSim) -> None:
    sim.reject(
        "pos-77",
        status=403,
        code="INSUFFICIENT_PERMISSION",
        detail="Permission Violation: {externalId} is locked.",
    )
    reply = await ns.call("PUT", "/record/v1/cashSale/eid:POS-77", cash_sale(sim))
    assert reply.status == 403
    assert reply.error_code() == "INSUFFICIENT_PERMISSION"
    assert reply.body["o:errorDetails"][0]["detail"] == "Permission Violation: POS-77 is locked."
    other = await ns.call("PUT", "/record/v1/cashSale/eid:POS-78", cash_sale(sim))
    assert other.status == 204
    sim.accept("POS-77")
    assert (await ns.call("PUT", "/record/v1/cashSale/eid:POS-77", cash_sale(sim))).status == 204


async def test_the_control_api_scripts_faults_and_rejections(
    ns: Ns, sim: NetSuiteSim, server: NetSuiteServer
) -> None:
    controls = {
        "script": [{"kind": "server_error", "status": 502}],
        "reject": {"X-1": {"code": "USER_ERROR", "detail": "no {externalId}"}},
    }
    async with ns.session.post(f"{server.url}/_sim/faults", json=controls) as response:
        assert response.status == 200
        state = await response.json()
    assert state["scripted"][0]["status"] == 502
    assert state["rejected"] == ["x-1"]
    first = await ns.call("PUT", "/record/v1/cashSale/eid:X-1", cash_sale(sim))
    assert first.status == 502
    second = await ns.call("PUT", "/record/v1/cashSale/eid:X-1", cash_sale(sim))
    assert (second.status, second.body["o:errorDetails"][0]["detail"]) == (400, "no X-1")
    async with ns.session.post(
        f"{server.url}/_sim/faults", json={"script": [{"kind": "nope"}]}
    ) as response:
        assert response.status == 400


async def seeded_statuses(seed: int) -> list[int]:
    clock = Clock()
    plan = FaultPlan(seed=seed, profile=FaultProfile(server_error=0.3, throttle=0.2))
    sim = NetSuiteSim(ACCOUNT, catalogue_size=50, tba=[TBA], clock=clock, faults=plan)
    async with run_netsuite_sim(sim) as server, aiohttp.ClientSession() as session:
        ns = Ns(session, server, clock)
        return [(await ns.call("GET", "/record/v1/customer/1")).status for _ in range(20)]


async def test_a_seeded_fault_profile_repeats_itself() -> None:
    first = await seeded_statuses(7)
    assert first == await seeded_statuses(7)
    assert {429, 200} <= set(first)
    assert set(first) & {500, 502, 503}
    assert first != await seeded_statuses(8)


async def test_credentials_can_be_registered_after_start(ns: Ns, sim: NetSuiteSim) -> None:
    other = TbaCredential("ck2", "cs2", "tok2", "ts2")
    ns.credential = other
    assert (await ns.call("GET", "/record/v1/customer/1")).status == 401
    sim.auth.tba[("ck2", "tok2")] = other
    assert (await ns.call("GET", "/record/v1/customer/1")).status == 200
