"""The store's catalogue read from the NetSuite simulator over real HTTP into a real catalogue
file: a full download by keyset (past SuiteQL's 100,000-row cap), incremental reads by date,
and the periodic full download that catches what an incremental read cannot see."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from edge.bus import Topics
from edge.catalogue.service import CatalogueService
from edge.catalogue.store import CatalogueStore
from edge.metrics import Metrics
from edge.sim.netsuite.auth import TbaCredential
from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim, run_netsuite_sim
from edge.uplink.netsuite.catalogue import NetSuiteCatalogueSource, ReadStats
from edge.uplink.netsuite.connector import NetSuiteConnector, TbaCredentials
from edge.uplink.netsuite.mapping import CatalogueMapping, Mapping
from tests.netsuite.test_store_day import toml

TBA = TbaCredential("ck", "cs", "tok", "ts")
EDGE = str(Path(sys.executable).parent / "edge")
MAPPING = CatalogueMapping(
    enabled=True,
    page_size=1000,
    custom_fields=["custitem_pos_tax_group"],
    tax_groups={"1": "REDUCED"},
    tax_codes={"STD": "0.19", "REDUCED": "0.07"},
    price_levels={"1": "base", "2": "employee"},
)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Sync:
    """The hub's catalogue service with NetSuite as its source, one sync at a time."""

    def __init__(
        self, store: CatalogueStore, ns: NetSuiteConnector, spool: Path, clock: Clock
    ) -> None:
        self.source = NetSuiteCatalogueSource(ns, MAPPING, clock=clock)
        self.service = CatalogueService(
            store, self.source, None, topics=Topics("s1"), metrics=Metrics(), spool_dir=spool,
            now=clock,
        )  # fmt: skip

    async def sync(self) -> ReadStats:
        result = await self.service.sync_once()
        assert result.ok, result
        return self.source.last


async def serve(size: int) -> AsyncIterator[NetSuiteServer]:
    sim = NetSuiteSim("1234567", catalogue_size=size)
    sim.auth.tba[(TBA.consumer_key, TBA.token)] = TBA
    async with run_netsuite_sim(sim) as server:
        yield server


@pytest.fixture
async def netsuite() -> AsyncIterator[NetSuiteServer]:
    async for server in serve(2500):
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CatalogueStore]:
    catalogue = CatalogueStore(tmp_path / "catalogue.db")
    await catalogue.open()
    try:
        yield catalogue
    finally:
        await catalogue.close()


def connector(server: NetSuiteServer) -> NetSuiteConnector:
    return NetSuiteConnector(
        base_url=server.url,
        account_id="1234567",
        credentials=TbaCredentials("ck", "cs", "tok", "ts"),
        mapping=Mapping(),
        timeout_s=10.0,
    )


def sellable(sim: NetSuiteSim, item_id: int) -> bool:
    row = sim.catalogue.item(item_id)
    return row is not None and not row["isinactive"] and row["itemtype"] in MAPPING.item_types


async def test_full_then_incremental_then_full_again(
    netsuite: NetSuiteServer, store: CatalogueStore, tmp_path: Path
) -> None:
    sim, clock = netsuite.sim, Clock()
    ns = connector(netsuite)
    sync = Sync(store, ns, tmp_path / "spool", clock)
    try:
        first = await sync.sync()
        assert first.mode == "full"
        assert first.items == 2500
        assert first.pages == 3, "keyset pages of 1000"
        wanted = sum(sellable(sim, n) for n in range(1, 2501))
        assert (await store.stats()).items == wanted
        assert not list(tmp_path.joinpath("spool").iterdir()), "the spool file is removed"

        # An item as NetSuite has it: SKU, barcodes (UPC and the alternates), prices by level.
        item_id = next(
            n for n in range(1, 2501) if sellable(sim, n) and sim.catalogue.item(n)["upccode"]
        )  # type: ignore[index]
        row = sim.catalogue.item(item_id)
        assert row is not None
        item = await store.item_by_barcode(row["upccode"])
        assert item is not None
        assert item.sku == row["itemid"]
        assert item.names["en"] == row["displayname"]
        prices = {p.level: p.amount for p in await store.prices_for(item.sku)}
        base = next(p for p in sim.catalogue.prices(item_id) if p.pricelevel == 1)
        assert prices["base"] == Decimal(str(base.unitprice))
        inactive = next(n for n in range(1, 2501) if sim.catalogue.item(n)["isinactive"])  # type: ignore[index]
        assert await store.item_by_sku(sim.catalogue.item(inactive)["itemid"]) is None  # type: ignore[index]

        # A day later in NetSuite: a rename, a retired item, a new one, a deletion.
        clock.now += 3600
        renamed, retired, deleted = [n for n in range(10, 2501) if sellable(sim, n)][:3]
        sim.catalogue.update_item(renamed, clock.now, displayname="Renamed in NetSuite")
        sim.catalogue.deactivate(retired, clock.now)
        sim.catalogue.add_item(clock.now, displayname="Brand new", upccode="2999999999994")
        sim.catalogue.delete_item(deleted, clock.now)
        version = (await store.stats()).version
        second = await sync.sync()
        assert second.mode == "incremental"
        assert second.items < 10, "only what changed (and the overlap window) is read"
        sku = lambda n: sim.catalogue.item(n)["itemid"]  # type: ignore[index] # noqa: E731
        renamed_item = await store.item_by_sku(sku(renamed))
        assert renamed_item is not None
        assert renamed_item.names["en"] == "Renamed in NetSuite"
        assert await store.item_by_sku(sku(retired)) is None
        new_item = await store.item_by_barcode("2999999999994")
        assert new_item is not None
        assert new_item.names["en"] == "Brand new"
        assert (await store.stats()).version > version
        deleted_sku = f"SKU-{deleted:07d}"
        assert await store.item_by_sku(deleted_sku) is not None, "a deletion is invisible here"

        # The periodic full download deletes what NetSuite no longer has.
        clock.now += MAPPING.full_every_h * 3600
        third = await sync.sync()
        assert third.mode == "full"
        assert await store.item_by_sku(deleted_sku) is None
        assert await store.item_by_sku(sku(renamed)) is not None
    finally:
        await ns.aclose()


async def test_a_catalogue_past_the_100000_row_cap_is_read_whole(
    store: CatalogueStore, tmp_path: Path
) -> None:
    async for server in serve(101_500):
        ns = connector(server)
        try:
            sync = Sync(store, ns, tmp_path / "spool", Clock())
            result = await sync.sync()
        finally:
            await ns.aclose()
        assert result.items == 101_500
        last = server.sim.catalogue.item(101_500)
        assert last is not None
        wanted = sum(1 for n in range(1, 101_501) if sellable(server.sim, n))
        assert (await store.stats()).items == wanted
        if not last["isinactive"]:
            assert await store.item_by_sku(last["itemid"]) is not None


async def test_the_technician_command_syncs_with_progress_and_json(
    netsuite: NetSuiteServer, tmp_path: Path
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        toml(
            {
                "store_id": "s1",
                "state_dir": str(tmp_path / "state"),
                "outbox": {"connector": "netsuite"},
                "uplink": {
                    "netsuite": {
                        "account_id": "1234567",
                        "base_url": netsuite.url,
                        "auth": "tba",
                        "consumer_key": "ck",
                        "consumer_secret": "cs",
                        "token_id": "tok",
                        "token_secret": "ts",
                        "catalogue": {"enabled": True, "page_size": 500},
                    }
                },
            }
        )
    )

    async def edge(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            EDGE, "--config", str(config), "netsuite", "catalogue-sync", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode() + err.decode()

    code, human = await edge()
    assert code == 0, human
    assert "full sync: 2,500 items read in 5 page(s)" in human
    code, text = await edge("--json")
    assert code == 0, text
    report = json.loads(text)
    assert report["mode"] == "incremental"
    assert report["items_in_store"] == sum(sellable(netsuite.sim, n) for n in range(1, 2501))
