"""The HQ catalogue source against the simulator over real HTTP, into a real catalogue file.

Each test pins a promise the downsync relies on: a full download and the changes after it
rebuild exactly the cloud's catalogue, whatever the page size and whatever changes meanwhile;
an expired cursor means a full download, not an error; a cloud failure is a classified error.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from decimal import Decimal

import msgspec
import pytest

from edge.catalogue.model import (
    AmountOff,
    BuyXGetY,
    CustomField,
    Item,
    MixAndMatch,
    PercentOff,
    encode,
)
from edge.catalogue.source import (
    HqCatalogueSource,
    SourceRefused,
    SourceUnavailable,
)
from edge.catalogue.store import Applied, CatalogueStore
from edge.sim.hq_catalogue import (
    DEFAULT_TOKEN,
    CatalogueFault,
    HqCatalogueServer,
    HqCatalogueSimulator,
    generate_catalogue,
    generated_barcode,
    generated_sku,
    run_hq_catalogue,
)
from tests.catalogue.builders import T0
from tests.catalogue.conftest import current_records


@pytest.fixture
async def hq() -> AsyncIterator[HqCatalogueServer]:
    async with run_hq_catalogue(sim=HqCatalogueSimulator(60, seed=7)) as server:
        yield server


def source_for(server: HqCatalogueServer, **kw: object) -> HqCatalogueSource:
    return HqCatalogueSource(base_url=server.url, token=DEFAULT_TOKEN, **kw)  # type: ignore[arg-type]


async def sync(store: CatalogueStore, source: HqCatalogueSource) -> tuple[bool, Applied | None]:
    """What the service does, without it: full load or each delta in turn."""
    download = await source.fetch(await store.upstream_cursor())
    parts = [part async for part in download.parts]
    if download.full:
        return True, await store.load_full(parts, now=T0)
    applied = None
    for part in parts:
        applied = await store.apply_delta(part, now=T0)
    return False, applied


def cloud_records(sim: HqCatalogueSimulator) -> dict[tuple[str, str], bytes]:
    records: dict[tuple[str, str], bytes] = {}
    for entity, table in (
        ("custom_field", sim.custom_fields),
        ("tax_code", sim.tax_codes),
        ("item", sim.items),
        ("price", sim.prices),
        ("promotion", sim.promotions),
    ):
        records.update(((entity, key), encode(record)) for key, record in table.items())
    return records


def test_generator_is_deterministic_and_valid_for_the_model() -> None:
    """The demo and the bench rely on the same seed giving the same catalogue."""
    a, b = generate_catalogue(500, seed=3), generate_catalogue(500, seed=3)
    assert a == b
    assert len(a.items) == 500
    assert len({code for item in a.items for code in item.barcodes}) >= 500
    assert {type(p) for p in a.promotions} == {PercentOff, AmountOff, BuyXGetY, MixAndMatch}
    assert any(item.weighed for item in a.items)
    assert generate_catalogue(500, seed=4) != a


async def test_full_load_then_changes_rebuild_the_clouds_catalogue(
    hq: HqCatalogueServer, store: CatalogueStore
) -> None:
    source = source_for(hq, page_size=7)
    try:
        full, applied = await sync(store, source)
        assert full
        assert applied is not None
        assert await store.upstream_cursor() == hq.sim.cursor
        assert await current_records(store) == cloud_records(hq.sim)
        assert hq.sim.stats.requests["full"] == 9  # 60 items, 7 a page

        sku = generated_sku(4)
        hq.sim.set_price(sku, "9.99")
        hq.sim.delete_item(generated_sku(5))
        hq.sim.set_custom_value(generated_sku(10), "color", None)
        full, _ = await sync(store, source)
        assert not full
        assert await store.item_by_sku(generated_sku(5)) is None
        assert await store.item_by_barcode(generated_barcode(5)) is None
        assert [p.amount for p in await store.prices_for(sku) if p.level == "base"] == [
            Decimal("9.99")
        ]
        item = await store.item_by_sku(generated_sku(10))
        assert item is not None
        assert "color" not in item.custom
        assert await current_records(store) == cloud_records(hq.sim)

        # Nothing changed upstream: an empty page, the same version.
        version = await store.version()
        full, _ = await sync(store, source)
        assert not full
        assert await store.version() == version
    finally:
        await source.aclose()


async def test_a_full_download_is_one_point_in_time_while_the_cloud_changes(
    hq: HqCatalogueServer, store: CatalogueStore
) -> None:
    """Changes between the pages of a full download must not tear it (the snapshot), and the
    changes after it bring the hub to the cloud's state."""
    source = source_for(hq, page_size=10)
    try:
        download = await source.fetch(None)
        parts = [await anext(download.parts)]
        hq.sim.delete_item(generated_sku(55))  # on a later page
        hq.sim.set_price(generated_sku(1), "0.10")  # on the page already read
        parts += [part async for part in download.parts]
        await store.load_full(parts, now=T0)
        assert await store.item_by_sku(generated_sku(55)) is not None  # as of the snapshot
        await sync(store, source)
        assert await current_records(store) == cloud_records(hq.sim)
    finally:
        await source.aclose()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_any_history_cut_into_any_pages_applies_cleanly(
    store: CatalogueStore, seed: int
) -> None:
    """Every page of changes must apply without breaking the model (a price for a deleted item,
    a promotion naming a missing SKU, an unknown custom field) however the history is cut, and
    end equal to the cloud."""
    rng = random.Random(seed)
    sim = HqCatalogueSimulator(30, seed=seed)
    async with run_hq_catalogue(sim=sim) as server:
        source = source_for(server, page_size=rng.randint(1, 5))
        try:
            await sync(store, source)
            for step in range(120):
                _random_change(sim, rng, step)
                if rng.random() < 0.15:
                    await sync(store, source)
            await sync(store, source)
            assert await current_records(store) == cloud_records(sim)
            assert await store.quarantined() == []
        finally:
            await source.aclose()


def _random_change(sim: HqCatalogueSimulator, rng: random.Random, step: int) -> None:
    skus = sorted(sim.items)
    roll = rng.random()
    if roll < 0.25 and skus:
        sim.set_price(rng.choice(skus), f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}")
    elif roll < 0.4 and len(skus) > 3:
        sim.delete_item(rng.choice(skus))
    elif roll < 0.55:
        sku = f"NEW-{step}"
        sim.upsert_item(
            Item(sku=sku, names={"en": sku}, tax_code="STD", barcodes=[f"99{step:06d}"]),
            price="1.00",
        )
    elif roll < 0.65 and skus:
        pid = f"P-{rng.randint(0, 5)}"
        chosen = rng.sample(skus, min(len(skus), rng.randint(1, 3)))
        sim.upsert_promotion(PercentOff(promotion_id=pid, skus=chosen, percent=Decimal(5)))
    elif roll < 0.72 and "color" in sim.custom_fields:
        sim.delete_custom_field("color")
    elif roll < 0.8 and skus:
        if "origin" in sim.custom_fields:
            sim.set_custom_value(rng.choice(skus), "origin", rng.choice(["FR", None]))
    elif roll < 0.85:
        sim.upsert_custom_field(CustomField(name="color", label=f"Colour {step}"))
    elif skus:
        item = sim.items[rng.choice(skus)]
        sim.upsert_item(msgspec.structs.replace(item, names={"en": f"renamed {step}"}))


async def test_an_expired_cursor_means_a_full_download(
    hq: HqCatalogueServer, store: CatalogueStore
) -> None:
    source = source_for(hq)
    try:
        await sync(store, source)
        hq.sim.delete_item(generated_sku(2))
        hq.sim.expire_changes()
        download = await source.fetch(await store.upstream_cursor())
        assert (download.full, download.reason) == (True, "cursor_expired")
        await store.load_full([p async for p in download.parts], now=T0)
        assert await store.item_by_sku(generated_sku(2)) is None
        assert await current_records(store) == cloud_records(hq.sim)

        other = await source.fetch("another-catalogue.12")
        assert other.full
        await other.parts.aclose()  # type: ignore[attr-defined]
    finally:
        await source.aclose()


async def test_cloud_failures_are_classified(hq: HqCatalogueServer, store: CatalogueStore) -> None:
    """5xx and a hung request are worth retrying; a wrong token is not (it needs a fix)."""
    source = source_for(hq, timeout_s=0.5)
    try:
        hq.sim.script(CatalogueFault.server_error(503))
        download = await source.fetch(None)
        with pytest.raises(SourceUnavailable, match="503"):
            await anext(download.parts)

        await sync(store, source)
        hq.sim.script(CatalogueFault.hang())
        with pytest.raises(SourceUnavailable, match="no answer in time"):
            await source.fetch(await store.upstream_cursor())
    finally:
        await source.aclose()

    wrong = HqCatalogueSource(base_url=hq.url, token="wrong")
    try:
        with pytest.raises(SourceRefused, match="401") as refused:
            await wrong.fetch(await store.upstream_cursor())
        assert not refused.value.retryable
    finally:
        await wrong.aclose()
