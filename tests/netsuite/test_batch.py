"""NetSuite's asynchronous batch path (setting ``batch``) against the simulator over real HTTP:
one job per record type, the same job found again when a batch is re-sent after a lost answer
or a crash, an item NetSuite refuses rejected alone, and the single-record path whenever a batch
cannot carry an item or NetSuite refuses the batch itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge.outbox.policy import Delivered, Rejected, RetryLater
from edge.sim.netsuite.faults import Fault, FaultTarget
from edge.sim.netsuite.jobs import ReplayMode
from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim, run_netsuite_sim
from edge.uplink.base import Outbound, Outcome
from edge.uplink.netsuite.connector import NetSuiteConnector
from edge.uplink.netsuite.mapping import external_id
from tests.netsuite.test_connector import TBA, connector, golden, outbound, sale


@contextlib.asynccontextmanager
async def running(sim: NetSuiteSim) -> AsyncIterator[NetSuiteServer]:
    sim.auth.tba[("ck", "tok")] = TBA
    async with run_netsuite_sim(sim) as server:
        yield server


@pytest.fixture
async def netsuite() -> AsyncIterator[NetSuiteServer]:
    async with running(NetSuiteSim("1234567", catalogue_size=200)) as server:
        yield server


def batching(server: NetSuiteServer, **kwargs: Any) -> NetSuiteConnector:
    return connector(server, batch=True, batch_poll_s=0.01, **kwargs)


def day(count: int) -> list[Outbound]:
    return [outbound(sale(seed)) for seed in range(1, count + 1)]


async def deliver(ns: NetSuiteConnector, items: list[Outbound]) -> list[Outcome]:
    try:
        return await ns.deliver(items)
    finally:
        await ns.aclose()


def held_once(sim: NetSuiteSim, items: list[Outbound], outcomes: list[Outcome]) -> None:
    """Each sale is one cash sale in NetSuite, and its outcome names that record."""
    for item, outcome in zip(items, outcomes, strict=True):
        eid = external_id(item.key)
        record = sim.record("cashSale", eid)
        assert record is not None, item.key
        assert outcome == Delivered(f"cashSale:{record.id}")
        assert sim.count("cashSale", eid) == 1


async def test_sales_go_as_one_async_job_and_the_rest_one_by_one(
    netsuite: NetSuiteServer,
) -> None:
    sim = netsuite.sim
    sales = day(12)
    split = outbound(golden("sale_jpy_split_tender"))  # an invoice and two payments
    refund = outbound(golden("return_with_receipt"))  # alone of its type
    quiet = outbound(golden("no_sale"))  # not an ERP record
    ns = batching(netsuite)
    assert ns.max_batch == 100
    outcomes = await deliver(ns, [*sales[:6], split, refund, quiet, *sales[6:]])

    (job,) = sim.jobs.jobs.values()
    assert len(job.tasks) == len(sales), "one task per sale, nothing else in the batch"
    assert job.progress == "succeeded"
    held_once(sim, sales, outcomes[:6] + outcomes[9:])
    kinds = [o.record_id.split(":")[0] for o in outcomes[6:8] if isinstance(o, Delivered)]
    assert kinds == ["invoice", "cashRefund"], outcomes
    assert outcomes[8] == Delivered("not-posted:no_sale")
    assert sim.duplicates() == {}


async def test_a_single_item_takes_the_single_record_path(netsuite: NetSuiteServer) -> None:
    items = day(1)
    outcomes = await deliver(batching(netsuite), items)
    held_once(netsuite.sim, items, outcomes)
    assert netsuite.sim.jobs.jobs == {}, "no job for one record"


@pytest.mark.parametrize("replay", ["conflict", "accept"])
@pytest.mark.parametrize("target", [FaultTarget.RECORD, FaultTarget.JOB])
async def test_a_batch_sent_again_after_a_lost_answer_finds_its_first_job(
    replay: ReplayMode, target: FaultTarget
) -> None:
    """The answer to the batch request, or to a poll of its job, is lost after NetSuite acted
    (as after a crash of the hub): the items are retried, and the same batch carries the same
    idempotency key, so NetSuite points at the first job (ref §2.2) instead of running a
    second one."""
    async with running(NetSuiteSim("1234567", catalogue_size=200, job_replay=replay)) as netsuite:
        sim = netsuite.sim
        sim.script(Fault.commit_then_lose(target))
        items = day(5)
        first = await deliver(batching(netsuite), items)
        assert all(isinstance(o, RetryLater) for o in first), first
        assert sim.faults.scripted == ()
        again = await deliver(batching(netsuite), items)

        assert len(sim.jobs.jobs) == 1, "no second job"
        assert sim.jobs.replays == 1, "the second submission was recognised by its key"
        held_once(sim, items, again)
        assert sim.duplicates() == {}


async def test_a_job_still_running_is_retried_later_and_found_again() -> None:
    async with running(NetSuiteSim("1234567", catalogue_size=200, job_polls=3)) as netsuite:
        sim = netsuite.sim
        items = day(4)
        first = await deliver(batching(netsuite, batch_wait_s=0.005), items)
        assert all(isinstance(o, RetryLater) and o.kind == "timeout" for o in first), first
        (job,) = sim.jobs.jobs.values()
        assert job.progress == "pending"
        again = await deliver(batching(netsuite), items)

        assert list(sim.jobs.jobs.values()) == [job]
        assert job.progress == "succeeded"
        held_once(sim, items, again)


async def test_an_item_netsuite_refuses_is_rejected_alone(netsuite: NetSuiteServer) -> None:
    sim = netsuite.sim
    items = day(6)
    refused = items[2]
    sim.reject(external_id(refused.key), code="USER_ERROR", detail="Closed period.")
    outcomes = await deliver(batching(netsuite), items)

    (job,) = sim.jobs.jobs.values()
    assert job.progress == "failed"
    bad = outcomes.pop(2)
    assert isinstance(bad, Rejected), bad
    assert bad.code == "USER_ERROR"
    assert bad.detail["o:errorDetails"][0]["detail"] == "Closed period.", "kept whole"
    assert sim.count("cashSale", external_id(refused.key)) == 0
    held_once(sim, items[:2] + items[3:], outcomes)


async def test_an_account_without_batches_gets_one_request_per_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(NetSuiteSim("1234567", catalogue_size=200, batches=False)) as netsuite:
        items = day(6)
        with caplog.at_level(logging.WARNING, logger="edge.uplink.netsuite.connector"):
            ns = batching(netsuite)
            try:
                outcomes = await ns.deliver(items[:3])
                outcomes += await ns.deliver(items[3:])
            finally:
                await ns.aclose()
        held_once(netsuite.sim, items, outcomes)
        assert netsuite.sim.jobs.jobs == {}
        refusals = [r for r in caplog.records if "batch was refused" in r.getMessage()]
        assert len(refusals) == 1, "said once, not for every batch"
        assert "INVALID_METHOD" in refusals[0].getMessage()


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "throttled"), (401, "throttled"), (503, "server")]
)
async def test_a_throttled_or_failing_batch_is_retried_later_whole(
    netsuite: NetSuiteServer, status: int, kind: str
) -> None:
    sim = netsuite.sim
    sim.script(status)
    items = day(3)
    first = await deliver(batching(netsuite), items)
    assert first == [first[0]] * 3
    assert isinstance(first[0], RetryLater)
    assert first[0].kind == kind
    assert sim.jobs.jobs == {}
    assert sim.ledger() == {}, "nothing was posted one by one meanwhile"
    held_once(sim, items, await deliver(batching(netsuite), items))
