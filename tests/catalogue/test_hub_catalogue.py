"""The catalogue in a running hub, as registers, price checkers, HQ and technicians use it:
a real hub (its own Bus, HTTP server and catalogue file) downsyncing from the HQ catalogue
simulator over HTTP, registers following the feed over HTTP (edge.sim.catalogue_follower, the
way docs/protocol.md tells a vendor to), lookups over MQTT and HTTP, and the CLI.

The invariant every test ends on: a register holds exactly the hub's catalogue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from edge.app import Hub
from edge.bus import Topics
from edge.catalogue.store import DAY
from edge.sim.catalogue_follower import FeedFollower, hub_records
from edge.sim.hq_catalogue import (
    DEFAULT_TOKEN,
    CatalogueFault,
    HqCatalogueServer,
    HqCatalogueSimulator,
    generated_barcode,
    generated_sku,
    run_hq_catalogue,
)
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub
from tests.outbox.test_outbox_hub import SUBMIT, sale

WAIT = 20.0
TOPICS = Topics("s1")
EDGE = str(Path(sys.executable).parent / "edge")


@contextlib.asynccontextmanager
async def store_with_hq(
    tmp_path: Path, broker: MosquittoProcess, items: int = 3000, **overrides: Any
) -> AsyncIterator[tuple[Hub, HqCatalogueServer]]:
    async with run_hq_catalogue(sim=HqCatalogueSimulator(items, seed=7)) as hq:
        settings = hub_settings(
            tmp_path,
            broker_port=broker.port,
            catalogue__source="hq",
            catalogue__url=hq.url,
            catalogue__token=DEFAULT_TOKEN,
            catalogue__retry_min_s=0.05,
            **overrides,
        )
        async with run_hub(settings) as hub:
            yield hub, hq


async def first_sync(hub: Hub) -> None:
    """The hub syncs at start; wait for it (a request resolves with the next sync)."""
    async with asyncio.timeout(WAIT):
        while await hub.catalogue.store.version() == 0:
            result = await hub.catalogue.request_sync()
            assert result.ok or result.retryable, result


async def assert_same_catalogue(hub: Hub, follower: FeedFollower) -> None:
    cursor, records = await hub_records(hub.catalogue.store)
    assert follower.cursor == cursor
    assert follower.records.keys() == records.keys()
    assert follower.records == records


async def announced_version(hub: Hub, above: int) -> int:
    """The version on the retained topic, once it is above ``above``."""
    async with lane_client(hub, "lane-1") as lane:
        async with lane.subscription(hub.catalogue.topics.version) as queue:
            async with asyncio.timeout(WAIT):
                while True:
                    message = await queue.get()
                    version = int(msgspec.json.decode(message.payload)["version"])
                    if version > above:
                        return version


async def test_registers_follow_the_hub_by_snapshot_then_delta_and_stay_identical(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with store_with_hq(tmp_path, broker) as (hub, hq), aiohttp.ClientSession() as http:
        await first_sync(hub)
        lane1 = FeedFollower(hub.http.url, "lane-1")
        lane2 = FeedFollower(hub.http.url, "lane-2")

        # A new register: the whole catalogue as one consistent snapshot, compressed.
        pulled = await lane1.pull(http)
        assert [(p.mode, p.reason) for p in pulled] == [("snapshot", "no_cursor")]
        assert pulled[0].content_encoding == "gzip"
        assert pulled[0].records > 3000
        await assert_same_catalogue(hub, lane1)
        await lane2.pull(http)

        # HQ changes a price, deletes an item, adds one, and says "catalogue changed" (the
        # MQTT method HQ's command arrives as). The new version is announced, retained.
        version = await hub.catalogue.store.version()
        hq.sim.set_price(generated_sku(11), "1.23")
        hq.sim.delete_item(generated_sku(12))
        async with lane_client(hub, "hq") as client:
            reply = await client.request(TOPICS.hub_rpc("catalogue.sync"), {}, timeout=WAIT)
        assert reply.ok
        assert await announced_version(hub, version) > version

        # The registers fetch only what changed, tombstones included.
        pulled = await lane1.pull(http)
        assert [p.mode for p in pulled] == ["delta"]
        assert 2 <= pulled[0].records < 10
        assert ("item", generated_sku(12)) not in lane1.records
        await assert_same_catalogue(hub, lane1)

        # A register already current is told so, with nothing to apply.
        again = await lane1.pull(http)
        assert [(p.mode, p.records) for p in again] == [("current", 0)]

        # A delta bounded by `limit` comes in several answers, each applied whole.
        pulled = await lane2.pull(http, limit=1)
        assert [p.mode for p in pulled] == ["delta"] * len(pulled)
        assert len(pulled) >= 2
        await assert_same_catalogue(hub, lane2)

        # The hub knows where every register stands.
        async with http.get(f"{hub.http.url}/api/v1/catalogue") as response:
            status = await response.json()
        assert status["source"] == "hq"
        assert status["registers"]["counts"] == {"current": 2, "behind": 0, "stale": 0}
        assert {r["register"] for r in status["registers"]["all"]} == {"lane-1", "lane-2"}


async def test_a_register_off_past_the_tombstone_retention_gets_a_snapshot_and_loses_nothing(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with store_with_hq(tmp_path, broker, items=500) as (hub, hq):
        await first_sync(hub)
        async with aiohttp.ClientSession() as http:
            away = FeedFollower(hub.http.url, "lane-9")
            await away.pull(http)

            # While it is off: items deleted, and their tombstones pruned a month later.
            for n in (3, 4, 5):
                hq.sim.delete_item(generated_sku(n))
            assert (await hub.catalogue.request_sync()).ok
            pruned = await hub.catalogue.store.prune_tombstones(now=time.time() + 31 * DAY)
            assert pruned > 0

            pulled = await away.pull(http)
        assert [(p.mode, p.reason) for p in pulled] == [("snapshot", "stale")]
        assert ("item", generated_sku(4)) not in away.records
        await assert_same_catalogue(hub, away)


async def test_the_catalogue_and_the_registers_cursors_survive_a_hub_restart(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with run_hq_catalogue(sim=HqCatalogueSimulator(200, seed=3)) as hq:
        settings = hub_settings(
            tmp_path,
            broker_port=broker.port,
            catalogue__source="hq",
            catalogue__url=hq.url,
            catalogue__token=DEFAULT_TOKEN,
        )
        async with run_hub(settings) as hub, aiohttp.ClientSession() as http:
            await first_sync(hub)
            lane = FeedFollower(hub.http.url, "lane-1")
            await lane.pull(http)
        hq.sim.set_price(generated_sku(2), "9.99")
        hq.sim.script(CatalogueFault.server_error(503))  # the WAN is down as the hub restarts
        async with run_hub(settings) as hub, aiohttp.ClientSession() as http:
            # The old catalogue serves at once; the register's cursor is still good.
            lane.base_url = hub.http.url
            assert [p.mode for p in await lane.pull(http)] == ["current"]
            assert (await hub.catalogue.request_sync()).ok
            assert [p.mode for p in await lane.pull(http)] == ["delta"]
            await assert_same_catalogue(hub, lane)


async def test_lookups_over_mqtt_and_http_for_devices_that_keep_no_copy(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with store_with_hq(tmp_path, broker, items=300) as (hub, hq):
        await first_sync(hub)
        barcode, sku = generated_barcode(7), generated_sku(7)
        expected = hq.sim.prices[f"{sku}|base|"].amount
        async with lane_client(hub, "checker") as checker:
            by_barcode = await checker.request(
                TOPICS.hub_rpc("catalogue.lookup"), {"code": barcode}, timeout=WAIT
            )
            missing = await checker.request(
                TOPICS.hub_rpc("catalogue.lookup"), {"code": "0000000000000"}, timeout=WAIT
            )
        assert by_barcode.ok
        data = msgspec.to_builtins(by_barcode)["data"]
        assert data["item"]["sku"] == sku
        assert data["matched_by"] == "barcode"
        assert data["price"]["amount"] == str(expected)
        assert not missing.ok
        assert msgspec.to_builtins(missing)["error"]["code"] == "ITEM_NOT_FOUND"

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{hub.http.url}/api/v1/catalogue/items/{sku}") as response:
                assert response.status == 200
                body = await response.json()
            assert body["matched_by"] == "sku"
            assert body["price"]["amount"] == str(expected)
            async with http.get(f"{hub.http.url}/api/v1/catalogue/items/nope") as response:
                assert response.status == 404
                assert (await response.json())["error"]["code"] == "ITEM_NOT_FOUND"
            for query in ("cursor=garbage", "cursor=" + "a" * 32 + ":x", "limit=0"):
                async with http.get(f"{hub.http.url}/api/v1/catalogue/feed?{query}") as response:
                    assert response.status == 400, query
                    assert (await response.json())["error"]["code"] in (
                        "INVALID_CURSOR",
                        "BAD_REQUEST",
                    )


async def test_before_the_first_download_the_hub_says_not_ready_instead_of_an_empty_catalogue(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    async with run_hq_catalogue(sim=HqCatalogueSimulator(50)) as hq:
        hq.sim.script(*[CatalogueFault.server_error(503)] * 1000)
        settings = hub_settings(
            tmp_path,
            broker_port=broker.port,
            catalogue__source="hq",
            catalogue__url=hq.url,
            catalogue__token=DEFAULT_TOKEN,
        )
        async with run_hub(settings) as hub, aiohttp.ClientSession() as http:
            async with http.get(f"{hub.http.url}/api/v1/catalogue/feed") as response:
                assert response.status == 503
                assert response.headers["Retry-After"]
                assert (await response.json())["error"]["code"] == "CATALOGUE_NOT_READY"
            async with lane_client(hub, "lane-1") as lane:
                reply = await lane.request(
                    TOPICS.lane_rpc("lane-1", "catalogue.lookup"), {"sku": "x"}, timeout=WAIT
                )
            error = msgspec.to_builtins(reply)["error"]
            assert (error["code"], error["retryable"]) == ("CATALOGUE_NOT_READY", True)


@pytest.mark.parametrize("form", ["human", "json"])
async def test_the_technician_commands(tmp_path: Path, broker: MosquittoProcess, form: str) -> None:
    async with store_with_hq(tmp_path, broker, items=100) as (hub, hq):
        await first_sync(hub)
        async with aiohttp.ClientSession() as http:
            await FeedFollower(hub.http.url, "lane-1").pull(http)
        hq.sim.set_price(generated_sku(1), "2.50")
        flags = ["--json"] if form == "json" else []

        async def edge(*args: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                EDGE, "catalogue", "--url", hub.http.url, *args, *flags,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), WAIT)
            assert process.returncode is not None
            return process.returncode, out.decode() + err.decode()

        code, synced = await edge("sync", "--wait", "15")
        assert code == 0, synced
        code, status = await edge("status")
        assert code == 0, status
        code, found = await edge("lookup", generated_barcode(1))
        assert code == 0, found
        code, missing = await edge("lookup", "nope")
        assert code == 1, missing
        version = await hub.catalogue.store.version()
        if form == "json":
            assert json.loads(synced)["result"]["changes"] == 1
            body = json.loads(status)
            assert body["version"] == version
            assert body["registers"]["all"][0]["register"] == "lane-1"
            assert json.loads(found)["price"]["amount"] == "2.50"
            assert json.loads(missing)["error"]["code"] == "ITEM_NOT_FOUND"
        else:
            assert "delta sync: 1 changes" in synced
            assert f"catalogue version {version}" in status
            assert "lane-1" in status
            assert "price: 2.50 (base)" in found
            assert "ITEM_NOT_FOUND" in missing


async def test_a_sale_of_an_item_the_catalogue_lacks_is_accepted_and_flagged(
    tmp_path: Path, broker: MosquittoProcess
) -> None:
    """The sale happened: it is acknowledged and queued; the line whose SKU the store's
    catalogue does not hold carries UNKNOWN_SKU for review (issue 3)."""
    async with store_with_hq(tmp_path, broker, items=300) as (hub, _):
        await first_sync(hub)
        known = sale(1)
        for n, line in enumerate(known["lines"]):
            line["sku"] = generated_sku(n + 3)
        unknown = sale(2)
        async with lane_client(hub, "lane-1") as lane:
            accepted = msgspec.to_builtins(await lane.request(SUBMIT, known))
            flagged = msgspec.to_builtins(await lane.request(SUBMIT, unknown))
    assert accepted["ok"], accepted
    assert accepted["data"]["flags"] == []
    assert flagged["ok"], flagged
    codes = {f["code"] for f in flagged["data"]["flags"]}
    assert codes == {"UNKNOWN_SKU"}
    assert {f["sku"] for f in flagged["data"]["flags"]} == {li["sku"] for li in unknown["lines"]}
