"""The catalogue service with real parts only: the HQ catalogue simulator over HTTP, a real
catalogue file in tmp_path, a real Mosquitto (tests/conftest.py) with the hub's own Bus and
RpcRouter, and a register-side MQTT 5 client.

Each test names the failure it prevents. Nothing sleeps to synchronise: tests wait on the
service's futures, on MQTT messages, with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge.bus import Bus, Requester, RpcRouter, Topics
from edge.bus.client import Message
from edge.catalogue.feed import Cursor, FeedDecision
from edge.catalogue.pricing import BasketLine, price_basket
from edge.catalogue.service import CatalogueService, SyncResult
from edge.catalogue.source import HqCatalogueSource
from edge.catalogue.store import CatalogueStore
from edge.metrics import Metrics
from edge.settings import BusSettings
from edge.sim.hq_catalogue import (
    DEFAULT_TOKEN,
    CatalogueFault,
    HqCatalogueServer,
    HqCatalogueSimulator,
    generated_barcode,
    generated_sku,
    run_hq_catalogue,
)
from tests.catalogue.builders import DAY, T0
from tests.conftest import MosquittoProcess, lane_client

STORE = "s1"
WAIT = 10.0


class Clock:
    """Wall-clock seconds the test moves by hand (the service's ``now``)."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Harness:
    hq: HqCatalogueServer
    store: CatalogueStore
    service: CatalogueService
    bus: Bus
    topics: Topics
    metrics: Metrics
    clock: Clock

    @property
    def sim(self) -> HqCatalogueSimulator:
        return self.hq.sim

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def synced(self) -> SyncResult:
        result = await self.service.sync_once()
        assert result.ok, result
        return result


def new_store(tmp_path: Path) -> CatalogueStore:
    return CatalogueStore(tmp_path / "catalogue.db", tombstone_retention=30 * DAY)


@contextlib.asynccontextmanager
async def harness_for(
    tmp_path: Path, broker: MosquittoProcess, *, items: int = 40, **service_kw: Any
) -> AsyncIterator[Harness]:
    store = new_store(tmp_path)
    await store.open()
    metrics = Metrics()
    topics = Topics(STORE)
    settings = BusSettings(reconnect_min_s=0.02, reconnect_max_s=0.2, request_timeout_s=5.0)
    bus = Bus(
        host=broker.host,
        port=broker.port,
        client_id="edge-hub-s1-catalogue-test",
        topics=topics,
        hub_id="hub-test",
        version="test",
        settings=settings,
        metrics=metrics,
    )
    router = RpcRouter(bus=bus, topics=topics, settings=settings, metrics=metrics)
    clock = Clock()
    async with run_hq_catalogue(sim=HqCatalogueSimulator(items, seed=5)) as hq:
        source = HqCatalogueSource(
            base_url=hq.url, token=DEFAULT_TOKEN, page_size=10, timeout_s=1.0
        )
        service = CatalogueService(
            store,
            source,
            bus,
            topics=topics,
            metrics=metrics,
            interval=service_kw.pop("interval", 3600.0),
            retry_min=service_kw.pop("retry_min", 3600.0),
            now=clock,
            **service_kw,
        )
        service.register_rpc(router)
        bus_task = asyncio.create_task(bus.run(), name="bus-under-test")
        try:
            await bus.wait_connected(WAIT)
            yield Harness(hq, store, service, bus, topics, metrics, clock)
        finally:
            bus_task.cancel()
            await asyncio.gather(bus_task, return_exceptions=True)
            await source.aclose()
            await store.close()


@pytest.fixture
async def h(tmp_path: Path, broker: MosquittoProcess) -> AsyncIterator[Harness]:
    async with harness_for(tmp_path, broker) as harness:
        yield harness


@contextlib.asynccontextmanager
async def running(service: CatalogueService) -> AsyncIterator[None]:
    """The service's own loops (sync on start, on the interval, on request; announcing)."""
    task = asyncio.create_task(service.run(), name="catalogue-under-test")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def ask(client: Requester, topic: str, data: Any) -> dict[str, Any]:
    reply = await client.request(topic, data, timeout=WAIT)
    return msgspec.to_builtins(reply)  # type: ignore[no-any-return]


async def next_version(queue: asyncio.Queue[Message], above: int = -1) -> dict[str, Any]:
    """The next announcement on the version topic with a version above ``above``."""
    async with asyncio.timeout(WAIT):
        while True:
            message = await queue.get()
            body: dict[str, Any] = msgspec.json.decode(message.payload)
            if body["version"] > above:
                return body


# -- downsync --------------------------------------------------------------------------------


async def test_full_load_then_incremental_on_request(h: Harness) -> None:
    """A new hub must load everything once, then only what changed; a request (HQ's "catalogue
    changed", the technician's sync) must not wait for the interval."""
    async with running(h.service):
        first = await h.service.request_sync()
        assert first.ok, first
        assert (first.mode, first.reason) == ("full", "no_cursor")
        assert first.parts == 4  # 40 items, 10 a page
        assert (await h.store.stats()).items == 40
        assert await h.store.upstream_cursor() == h.sim.cursor

        h.sim.set_price(generated_sku(3), "7.77")
        second = await h.service.request_sync()
        assert second.ok, second
        assert (second.mode, second.changes) == ("delta", 1)
        assert second.version == first.version + 1
        prices = await h.store.prices_for(generated_sku(3))
        assert [p.amount for p in prices if p.level == "base"] == [Decimal("7.77")]
        assert h.sim.stats.full_downloads == 1

    assert h.metric("edge_catalogue_version") == second.version
    assert h.metric("edge_catalogue_items") == 40
    assert h.metric("edge_catalogue_syncs_total", mode="full") == 1
    assert h.metric("edge_catalogue_syncs_total", mode="delta") >= 1
    assert h.metric("edge_catalogue_last_success_timestamp_seconds") == T0


async def test_an_item_deleted_upstream_leaves_lookups_and_reaches_registers_as_a_tombstone(
    h: Harness,
) -> None:
    await h.synced()
    before = Cursor(h.store.epoch, await h.store.version())
    gone = generated_sku(6)
    assert await h.service.lookup(code=generated_barcode(6)) is not None

    h.sim.delete_item(gone)
    await h.synced()

    assert await h.service.lookup(code=generated_barcode(6)) is None
    assert await h.service.lookup(sku=gone) is None
    page = await h.store.changes_since(before)
    tombstones = {(r.entity, r.key) for r in page.records if r.op == "delete"}
    assert ("item", gone) in tombstones
    assert ("price", f"{gone}|base|") in tombstones


async def test_a_custom_field_removed_upstream_is_removed_here_and_for_the_registers(
    h: Harness,
) -> None:
    await h.synced()
    before = Cursor(h.store.epoch, await h.store.version())
    coloured = generated_sku(0)
    item = await h.store.item_by_sku(coloured)
    assert item is not None
    assert "color" in item.custom
    h.sim.set_custom_value(generated_sku(5), "origin", None)  # one value, on one item
    h.sim.delete_custom_field("color")  # the whole field, on every item
    await h.synced()

    item = await h.store.item_by_sku(coloured)
    assert item is not None
    assert "color" not in item.custom
    item5 = await h.store.item_by_sku(generated_sku(5))
    assert item5 is not None
    assert "origin" not in item5.custom
    assert [f.name for f in await h.store.custom_fields()] == ["origin"]

    page = await h.store.changes_since(before)
    changed = {(r.entity, r.key): r for r in page.records}
    assert changed[("custom_field", "color")].op == "delete"
    for sku in (coloured, generated_sku(5)):
        record = changed[("item", sku)]
        assert record.data is not None
        assert b'"color"' not in bytes(record.data)
    assert b'"origin"' not in bytes(changed[("item", generated_sku(5))].data or b"")


@pytest.mark.parametrize(
    ("fault", "failure"),
    [
        (CatalogueFault.server_error(500), "unavailable"),
        (CatalogueFault.server_error(503), "unavailable"),
        (CatalogueFault.hang(), "unavailable"),
        (CatalogueFault.corrupt(), "quarantined"),
    ],
    ids=["500", "503", "hang", "corrupt"],
)
async def test_an_hq_fault_leaves_the_old_catalogue_serving_and_the_next_sync_recovers(
    h: Harness, fault: CatalogueFault, failure: str
) -> None:
    await h.synced()
    version = await h.store.version()
    h.sim.set_price(generated_sku(1), "3.33")
    h.sim.script(fault)

    failed = await h.service.sync_once()
    assert not failed.ok
    assert failed.failure == failure
    assert failed.retryable == (failure == "unavailable")
    assert failed.version == version
    assert await h.store.version() == version
    old = await h.service.lookup(sku=generated_sku(1))
    assert old is not None
    assert old.price is not None
    assert old.price.amount != Decimal("3.33")
    assert h.metric("edge_catalogue_sync_failures_total", kind=failure) == 1

    recovered = await h.synced()
    assert recovered.mode == "delta"
    new = await h.service.lookup(sku=generated_sku(1))
    assert new is not None
    assert new.price is not None
    assert new.price.amount == Decimal("3.33")
    assert h.service.last_success is recovered


async def test_a_failed_sync_is_retried_without_waiting_for_the_interval(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """WAN back after an outage: the service must retry on its short backoff, not an interval
    (an hour here) later."""
    async with harness_for(tmp_path, broker, interval=3600.0, retry_min=0.05) as h:
        h.sim.script(CatalogueFault.server_error(503), CatalogueFault.server_error(503))
        async with lane_client(broker.port, "lane-1") as lane:
            async with lane.subscription(h.service.topics.version) as queue:
                async with running(h.service):
                    announced = await next_version(queue, above=0)
        assert announced["items"] == 40
        assert h.metric("edge_catalogue_sync_failures_total", kind="unavailable") == 2
        assert h.sim.stats.responses[503] == 2


async def test_a_stale_upstream_cursor_gets_a_full_download(h: Harness) -> None:
    await h.synced()
    h.sim.delete_item(generated_sku(9))
    h.sim.expire_changes()
    result = await h.synced()
    assert (result.mode, result.reason) == ("full", "cursor_expired")
    assert await h.store.item_by_sku(generated_sku(9)) is None


# -- the retained version topic --------------------------------------------------------------


async def test_the_retained_version_topic_follows_the_catalogue(
    h: Harness, broker: MosquittoProcess
) -> None:
    """A register must learn a new version without polling, and a register connecting later
    must find the current one retained."""
    async with running(h.service), lane_client(broker.port, "lane-1") as lane:
        first = await h.service.request_sync()
        async with lane.subscription(h.service.topics.version) as queue:
            announced = await next_version(queue, above=0)
            assert announced["version"] == first.version
            assert announced["epoch"] == h.store.epoch
            assert announced["cursor"] == f"{h.store.epoch}:{first.version}"
            assert announced["items"] == 40

            h.sim.delete_item(generated_sku(2))
            second = await h.service.request_sync()
            announced = await next_version(queue, above=first.version)
            assert announced["version"] == second.version
            assert announced["items"] == 39

    async with lane_client(broker.port, "lane-2") as late:
        async with late.subscription(h.service.topics.version) as queue:
            message = await asyncio.wait_for(queue.get(), WAIT)
            assert message.retain
            assert msgspec.json.decode(message.payload)["version"] == second.version


async def test_the_mqtt_sync_command_starts_a_sync(h: Harness, broker: MosquittoProcess) -> None:
    """HQ's "catalogue changed" arrives as hub/rpc/catalogue.sync: a sync must follow at once."""
    async with running(h.service), lane_client(broker.port, "lane-1") as hq_link:
        first = await h.service.request_sync()
        async with hq_link.subscription(h.service.topics.version) as queue:
            await next_version(queue, above=0)
            h.sim.set_price(generated_sku(0), "0.01")
            reply = await ask(hq_link, h.topics.hub_rpc("catalogue.sync"), {})
            assert reply["ok"], reply
            assert reply["data"]["requested"] is True
            announced = await next_version(queue, above=first.version)
            assert announced["version"] == first.version + 1


# -- lookups and pricing over MQTT -----------------------------------------------------------


async def test_mqtt_lookup_by_barcode_and_by_sku(h: Harness, broker: MosquittoProcess) -> None:
    await h.synced()
    async with lane_client(broker.port, "lane-1") as lane:
        hub_topic = h.topics.hub_rpc("catalogue.lookup")
        lane_topic = h.topics.lane_rpc("lane-1", "catalogue.lookup")

        by_barcode = await ask(lane, lane_topic, {"barcode": generated_barcode(12)})
        assert by_barcode["ok"], by_barcode
        data = by_barcode["data"]
        assert data["matched_by"] == "barcode"
        assert data["item"]["sku"] == generated_sku(12)
        assert data["price"]["level"] == "base"
        assert Decimal(data["price"]["amount"]) > 0
        assert data["version"] == await h.store.version()
        assert data["epoch"] == h.store.epoch

        by_sku = await ask(lane, hub_topic, {"sku": generated_sku(12)})
        assert by_sku["ok"], by_sku
        assert by_sku["data"]["matched_by"] == "sku"
        assert by_sku["data"]["item"] == data["item"]

        by_code = await ask(lane, hub_topic, {"code": generated_sku(12)})
        assert by_code["data"]["matched_by"] == "sku"
        by_code = await ask(lane, hub_topic, {"code": generated_barcode(12)})
        assert by_code["data"]["matched_by"] == "barcode"

        # A member price where there is one; the base price as the fallback elsewhere.
        member = await ask(lane, hub_topic, {"sku": generated_sku(1), "price_level": "member"})
        assert member["data"]["price"]["level"] == "member"
        fallback = await ask(lane, hub_topic, {"sku": generated_sku(2), "price_level": "member"})
        assert fallback["data"]["price"]["level"] == "base"

        # Promotions active at the time asked (default now): not last year's (PROMO-004).
        sku = h.sim.promotions["PROMO-004"].skus[0]
        now = await ask(lane, hub_topic, {"sku": sku})
        assert "PROMO-004" not in [p["promotion_id"] for p in now["data"]["promotions"]]
        then = await ask(lane, hub_topic, {"sku": sku, "at": "2020-01-15T12:00:00+01:00"})
        assert "PROMO-004" in [p["promotion_id"] for p in then["data"]["promotions"]]
        promoted = await ask(lane, hub_topic, {"sku": generated_sku(0)})
        assert "PROMO-000" in [p["promotion_id"] for p in promoted["data"]["promotions"]]


async def test_mqtt_lookup_of_an_unknown_code_is_a_stable_error(
    h: Harness, broker: MosquittoProcess
) -> None:
    async with lane_client(broker.port, "lane-1") as lane:
        topic = h.topics.hub_rpc("catalogue.lookup")
        empty = await ask(lane, topic, {"code": "4006381333931"})
        assert empty["error"]["code"] == "CATALOGUE_NOT_READY"
        assert empty["error"]["retryable"] is True

        await h.synced()
        unknown = await ask(lane, topic, {"code": "4006381333931"})
        assert not unknown["ok"]
        assert unknown["error"]["code"] == "ITEM_NOT_FOUND"
        assert unknown["error"]["retryable"] is False
        assert unknown["error"]["details"]["code"] == "4006381333931"

        not_a_sku = await ask(lane, topic, {"sku": generated_barcode(3)})
        assert not_a_sku["error"]["code"] == "ITEM_NOT_FOUND"
        two_keys = await ask(lane, topic, {"sku": "A", "barcode": "B"})
        assert two_keys["error"]["code"] == "SCHEMA_INVALID"
        naive = await ask(lane, topic, {"sku": "A", "at": "2026-05-01T12:00:00"})
        assert naive["error"]["code"] == "SCHEMA_INVALID"


async def test_mqtt_basket_pricing(h: Harness, broker: MosquittoProcess) -> None:
    """The same basket priced over MQTT must equal the pure function on the same version."""
    await h.synced()
    lines = [
        {"sku": generated_sku(0), "quantity": "3"},
        {"sku": generated_sku(13), "quantity": "1"},
        {"sku": generated_sku(7), "quantity": "0.455"},  # weighed
    ]
    async with lane_client(broker.port, "lane-1") as lane:
        topic = h.topics.lane_rpc("lane-1", "catalogue.price")
        at = "2026-05-01T12:00:00+00:00"
        reply = await ask(lane, topic, {"lines": lines, "at": at})
        assert reply["ok"], reply
        basket = reply["data"]
        assert basket["version"] == await h.store.version()
        view = await h.store.pricing_view([line["sku"] for line in lines])
        expected = price_basket(
            view,
            msgspec.convert(lines, list[BasketLine]),
            dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC),
        )
        assert basket == msgspec.to_builtins(expected)
        assert basket["applied"], "the basket should meet PROMO-000 (3 x SKU-0000000)"

        unknown = await ask(lane, topic, {"lines": [{"sku": "NOPE", "quantity": "1"}]})
        assert unknown["error"]["code"] == "UNKNOWN_SKU"
        assert unknown["error"]["details"] == {"sku": "NOPE"}
        fraction = await ask(lane, topic, {"lines": [{"sku": generated_sku(0), "quantity": "1.5"}]})
        assert fraction["error"]["code"] == "INVALID_BASKET"


# -- registers -------------------------------------------------------------------------------


async def test_registers_are_tracked_and_reported_stale_long_before_anything_is_lost(
    h: Harness,
) -> None:
    await h.synced()
    version = await h.store.version()
    current = Cursor(h.store.epoch, version)
    snapshot = FeedDecision("snapshot", "no_cursor", "new")
    h.service.note_feed("lane-1", None, snapshot, str(current))
    h.service.note_feed("lane-2", None, snapshot, str(Cursor(h.store.epoch, version - 5)))
    rows = {row["register"]: row for row in h.service.registers()}
    assert rows["lane-1"]["state"] == "current"
    assert (rows["lane-2"]["state"], rows["lane-2"]["behind"]) == ("behind", 5)
    assert h.metric("edge_catalogue_registers", state="current") == 1

    h.clock.t += 8 * DAY  # lane-2 is switched off for 8 days; lane-1 keeps polling
    h.service.note_feed("lane-1", current, FeedDecision("current", "current", "ok"), str(current))
    assert h.service.stale_registers() == ["lane-2"]
    assert h.metric("edge_catalogue_registers", state="stale") == 1
    assert h.metric("edge_catalogue_feed_requests_total", mode="snapshot") == 2
    status = await h.service.status()
    assert status["registers"]["stale"] == ["lane-2"]
    assert status["registers"]["counts"] == {"current": 1, "behind": 0, "stale": 1}
