"""Asynchronous record requests over real HTTP (ref §2): 202 + job Location, job and task
polling, X-NetSuite-Idempotency-Key (one job per key, Oracle's Conflict answer), and batches of
independent tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim, run_netsuite_sim
from tests.sim.netsuite.helpers import ACCOUNT, TBA, Clock, Ns, Reply, cash_sale

ASYNC = {"Prefer": "respond-async"}
KEY = "CAC827EA-3543-4CDA-ADD2-BAE634326C27"
BATCH = ASYNC | {"Content-Type": "application/vnd.oracle.resource+json; type=collection"}


def job_path(reply: Reply) -> str:
    assert reply.status == 202, reply.body
    assert reply.headers["Preference-Applied"] == "respond-async"
    location = reply.headers["Location"]
    assert location.startswith("/services/rest/async/v1/job/")
    return location.removeprefix("/services/rest")


async def test_an_async_upsert_runs_as_a_job_with_one_task(ns: Ns, sim: NetSuiteSim) -> None:
    reply = await ns.call("PUT", "/record/v1/cashSale/eid:A-1", cash_sale(sim), headers=ASYNC)
    job = job_path(reply)
    status = await ns.call("GET", job)
    assert status.body["completed"] is True
    assert status.body["progress"] == "succeeded"
    tasks = await ns.call("GET", f"{job}/task")
    assert tasks.body["count"] == 1
    task = await ns.call("GET", f"{job}/task/1")
    assert task.body["progress"] == "succeeded"
    assert task.body["links"][0]["href"].endswith(f"{job}/task/1/result")
    result = await ns.call("GET", f"{job}/task/1/result")
    assert result.status == 204
    record = sim.record("cashSale", "A-1")
    assert record is not None
    assert result.headers["Location"].endswith(f"/record/v1/cashSale/{record.id}")


async def test_an_idempotency_key_makes_one_job(ns: Ns, sim: NetSuiteSim) -> None:
    body = cash_sale(sim)
    headers = ASYNC | {"X-NetSuite-Idempotency-Key": KEY}
    first = job_path(await ns.call("PUT", "/record/v1/cashSale/eid:K-1", body, headers=headers))
    lower = headers | {"X-NetSuite-Idempotency-Key": KEY.lower()}
    again = await ns.call("PUT", "/record/v1/cashSale/eid:K-1", body, headers=lower)
    assert again.status == 400
    assert again.body["title"] == "Conflict"
    assert again.error_code() == "IDEMPOTENCY_ERROR"
    assert again.headers["Location"].removeprefix("/services/rest") == first
    assert len(sim.jobs.jobs) == 1
    assert sim.count("cashSale", "K-1") == 1

    other_body = await ns.call("PUT", "/record/v1/cashSale/eid:K-2", body, headers=headers)
    assert (other_body.status, other_body.error_code()) == (400, "IDEMPOTENCY_ERROR")
    assert "Location" not in other_body.headers
    bad_key = await ns.call(
        "PUT",
        "/record/v1/cashSale/eid:K-3",
        body,
        headers=ASYNC | {"X-NetSuite-Idempotency-Key": "not-a-uuid"},
    )
    assert (bad_key.status, bad_key.error_code()) == (400, "INVALID_HEADER")


async def test_the_key_is_ignored_on_synchronous_requests(ns: Ns, sim: NetSuiteSim) -> None:
    headers = {"X-NetSuite-Idempotency-Key": KEY}
    for n in (1, 2):
        reply = await ns.call(
            "POST", "/record/v1/cashSale", cash_sale(sim, f"S-{n}"), headers=headers
        )
        assert reply.status == 204
    assert not sim.jobs.jobs


@pytest.fixture
async def slow_jobs() -> AsyncIterator[tuple[Ns, NetSuiteSim]]:
    clock = Clock()
    sim = NetSuiteSim(ACCOUNT, catalogue_size=50, tba=[TBA], clock=clock, job_polls=1)
    async with run_netsuite_sim(sim) as server, aiohttp.ClientSession() as session:
        yield Ns(session, server, clock), sim


async def test_a_job_stays_pending_for_its_polls(slow_jobs: tuple[Ns, NetSuiteSim]) -> None:
    ns, sim = slow_jobs
    job = job_path(
        await ns.call("PUT", "/record/v1/cashSale/eid:J-1", cash_sale(sim), headers=ASYNC)
    )
    pending = await ns.call("GET", job)
    assert (pending.body["completed"], pending.body["progress"]) == (False, "pending")
    assert sim.count("cashSale", "J-1") == 0
    not_yet = await ns.call("GET", f"{job}/task/1/result")
    assert not_yet.status == 404
    done = await ns.call("GET", job)
    assert (done.body["completed"], done.body["progress"]) == (True, "succeeded")
    assert sim.count("cashSale", "J-1") == 1


async def test_a_batch_upsert_runs_each_item_on_its_own(ns: Ns, sim: NetSuiteSim) -> None:
    sim.reject("B-2", detail="refused {externalId}")
    items = [cash_sale(sim, f"B-{n}") for n in (1, 2, 3)]
    job = job_path(await ns.call("PUT", "/record/v1/cashSale", {"items": items}, headers=BATCH))
    status = await ns.call("GET", job)
    assert status.body["progress"] == "failed"
    progress = [(await ns.call("GET", f"{job}/task/{n}")).body["progress"] for n in (1, 2, 3)]
    assert progress == ["succeeded", "failed", "succeeded"]
    refused = await ns.call("GET", f"{job}/task/2/result")
    assert refused.status == 400
    assert refused.body["o:errorDetails"][0]["detail"] == "refused B-2"
    assert [sim.count("cashSale", f"B-{n}") for n in (1, 2, 3)] == [1, 0, 1]

    again = job_path(await ns.call("PUT", "/record/v1/cashSale", {"items": items}, headers=BATCH))
    assert (await ns.call("GET", again)).body["progress"] == "failed"
    assert not sim.duplicates()


async def test_batch_delete_and_batch_rules(
    ns: Ns, sim: NetSuiteSim, server: NetSuiteServer
) -> None:
    for n in (1, 2):
        await ns.call("PUT", f"/record/v1/cashSale/eid:D-{n}", cash_sale(sim))
    first = sim.record("cashSale", "D-1")
    assert first is not None
    job = job_path(
        await ns.call(
            "DELETE", "/record/v1/cashSale", params={"ids": f"{first.id},eid:d-2"}, headers=ASYNC
        )
    )
    assert (await ns.call("GET", job)).body["progress"] == "succeeded"
    assert sim.record("cashSale", "D-1") is None
    assert sim.record("cashSale", "D-2") is None

    sync_batch = await ns.call(
        "POST",
        "/record/v1/cashSale",
        {"items": [cash_sale(sim)]},
        headers={"Content-Type": BATCH["Content-Type"]},
    )
    assert (sync_batch.status, sync_batch.error_code()) == (400, "INVALID_HEADER")
    too_many = {"items": [cash_sale(sim)] * 101}
    big = await ns.call("POST", "/record/v1/cashSale", too_many, headers=BATCH)
    assert (big.status, big.error_code()) == (400, "INVALID_CONTENT")
    unknown_job = await ns.call("GET", "/async/v1/job/999")
    assert unknown_job.status == 404
