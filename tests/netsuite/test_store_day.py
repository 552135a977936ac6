"""A whole store day posted by a real hub to the NetSuite simulator through a faulty WAN, then
`edge reconcile` against it: zero differences; and every difference an accountant could make
afterwards is found. The daily journal is posted balanced and reconciles too."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edge.app import Hub
from edge.bus import Topics
from edge.sim import WanProxy
from edge.sim.netsuite.auth import TbaCredential
from edge.sim.netsuite.faults import Fault
from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim, run_netsuite_sim
from edge.sim.registers import CATALOGUE, make_sale
from edge.uplink.netsuite.mapping import external_id
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub

DATA = Path(__file__).parents[1] / "outbox" / "data"
EDGE = str(Path(sys.executable).parent / "edge")
STORE = "store-042"
TBA = TbaCredential("ck", "cs", "tok", "ts")
# Today, so that the outbox finds the day among what it accepted (it looks a few days around).
DAY = dt.datetime.now(dt.UTC).date()


def golden(name: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return document | {"register_time": f"{DAY}T10:15:00+00:00", "currency": "USD"} | changes


def store_day() -> list[dict[str, Any]]:
    """A day's business: sales (cash with change, card, a split tender, a known customer),
    returns with and without a receipt, exchanges both ways, and cash management."""
    day = [
        golden("sale_cash"),
        golden("sale_card_customer_vat_included"),
        golden("return_with_receipt"),
        golden("return_no_receipt_store_credit"),
        golden("exchange_customer_pays"),
        golden("exchange_refund"),
        golden("no_sale"),
        golden("paid_in"),
        golden("drawer_event"),
    ]
    for n in range(1, 31):
        sale = make_sale(store_id=STORE, lane_id="lane-02", number=n, rng=random.Random(n))
        sale |= {
            "register_time": f"{DAY}T{8 + n // 4:02d}:{n % 60:02d}:00+00:00",
            "currency": "USD",
        }
        if n % 10 == 0:  # split tender: part gift card, the rest by card
            total = sale["totals"]["total"]
            sale["tenders"] = [
                {"type": "gift_card", "amount": "1.00", "token": f"gc_{n}"},
                {"type": "card", "amount": str(Decimal(total) - 1), "token": f"tok_{n}"},
            ]
            sale["totals"] |= {"tendered": total, "change": "0.00"}
        day.append(sale)
    return day


def mapping(sim: NetSuiteSim, **changes: Any) -> dict[str, Any]:
    skus = [sku for sku, *_ in CATALOGUE] + ["SHIRT-M", "SHIRT-L", "JP-TEA-500"]
    ids = sim.active_item_ids(len(skus) + 1)
    return {
        "subsidiary_id": "1",
        "default_location_id": "1",
        "walk_in_customer_id": sim.walk_in_customer_id(),
        "items": {sku: str(item) for sku, item in zip(skus, ids, strict=False)},
        "discount_item_id": str(ids[-1]),
        "payment_methods": {"cash": "1", "card": "2", "gift_card": "3", "store_credit": "1"},
        "void_action": "skip",
        "netsuite_total_includes_tax": False,  # the simulator does not compute tax
        "journal_accounts": {
            "revenue": "400",
            "tax": "220",
            "discounts": "410",
            "tenders": {"cash": "100", "card": "101", "gift_card": "102", "store_credit": "103"},
        },
    } | changes


def toml(raw: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for these settings (tables, strings, numbers, booleans, string maps)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(str(v))

    tables = {k: v for k, v in raw.items() if isinstance(v, dict) and k not in INLINE}
    lines = [f"{k} = {value(v)}" for k, v in raw.items() if k not in tables]
    text = (f"[{prefix}]\n" if prefix and lines else "") + "".join(f"{ln}\n" for ln in lines)
    for name, table in tables.items():
        text += toml(table, f"{prefix}.{name}" if prefix else name)
    return text


INLINE = {"items", "payment_methods", "tenders", "locations", "currencies", "tax_codes"}


def settings_raw(tmp_path: Path, broker_port: int, ns_url: str, sim: NetSuiteSim) -> dict[str, Any]:
    return {
        "store_id": STORE,
        "state_dir": str(tmp_path / "state"),
        "outbox": {
            "connector": "netsuite",
            "min_free_bytes": 0,
            "retry_base_s": 0.05,
            "retry_cap_s": 0.3,
            "breaker_cooldown_s": 0.1,
            "breaker_cooldown_cap_s": 0.3,
            "idle_poll_s": 0.1,
        },
        "uplink": {
            "netsuite": {
                "account_id": sim.account_id,
                "base_url": ns_url,
                "auth": "tba",
                "consumer_key": TBA.consumer_key,
                "consumer_secret": TBA.consumer_secret,
                "token_id": TBA.token,
                "token_secret": TBA.token_secret,
                "timeout_s": 1.0,
                "mapping": mapping(sim),
            }
        },
    }


@pytest.fixture
async def netsuite() -> AsyncIterator[NetSuiteServer]:
    sim = NetSuiteSim("1234567", catalogue_size=100, latency_s=0.005)
    sim.auth.tba[(TBA.consumer_key, TBA.token)] = TBA
    async with run_netsuite_sim(sim) as server:
        yield server


async def submit_day(hub: Hub, documents: list[dict[str, Any]]) -> set[str]:
    topics = Topics(STORE)
    acked: set[str] = set()
    async with lane_client(hub, "lane-02", store=STORE) as lane:
        for document in documents:
            reply = await lane.request(topics.lane_rpc("lane-02", "txn.submit"), document)
            assert reply.ok, (document["txn_id"], reply.error)
            acked.add(document["txn_id"])
    return acked


async def outbox_empty(hub: Hub) -> None:
    assert hub.outbox is not None
    assert hub.outbox.sender is not None
    store = hub.outbox.store

    async def empty() -> bool:
        return (await store.stats()).pending == 0

    async with asyncio.timeout(60):
        await hub.outbox.sender.wait_until(empty)


async def breaker_open(hub: Hub) -> None:
    assert hub.outbox is not None
    assert hub.outbox.sender is not None
    outbox = hub.outbox

    async def is_open() -> bool:
        return str((await outbox.status())["breaker"]["state"]) != "closed"

    async with asyncio.timeout(30):
        await outbox.sender.wait_until(is_open)


async def reconcile(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        EDGE, "--config", str(config), "reconcile", "--date", DAY.isoformat(), "--json", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert not err, err.decode()
    return process.returncode, json.loads(out)


@pytest.mark.parametrize(
    "batch", [False, True], ids=["one-by-one", "async-batches-and-return-authorizations"]
)
async def test_a_store_day_through_a_faulty_wan_reconciles_with_zero_differences(
    tmp_path: Path, broker: MosquittoProcess, netsuite: NetSuiteServer, batch: bool
) -> None:
    sim = netsuite.sim
    host, port = netsuite.url.removeprefix("http://").rsplit(":", 1)
    async with WanProxy(host, int(port)) as wan:
        raw = settings_raw(tmp_path, broker.port, f"http://127.0.0.1:{wan.port}", sim)
        raw["uplink"]["netsuite"] |= {"batch": batch, "batch_poll_s": 0.02}
        raw["uplink"]["netsuite"]["mapping"]["return_authorization"] = batch
        config = tmp_path / "edge.toml"
        config.write_text(toml(raw))
        settings = hub_settings(tmp_path, broker_port=broker.port, **_flat(raw))
        # NetSuite has a bad day too: throttling, the 401 quirk, 5xx, answers lost after the
        # record was committed, connections reset.
        sim.script(
            429, 401, 503, Fault.commit_then_lose(), 500, Fault.commit_then_lose(), Fault.reset(),
            429, Fault.commit_then_lose(), 502,
        )  # fmt: skip
        async with run_hub(settings) as hub:
            wan.mode = "blackhole"  # the day starts with the WAN down
            acked = await submit_day(hub, store_day())
            await breaker_open(hub)
            wan.mode = "pass"
            await netsuite.wait_until(lambda: len(sim.ledger()) >= 10)
            wan.mode = "reset"  # it flaps mid-drain
            await breaker_open(hub)
            wan.mode = "pass"
            await outbox_empty(hub)
            assert hub.outbox is not None
            assert (await hub.outbox.store.stats()).parked == 0
        assert sim.faults.scripted == (), "every scripted fault was met"
        assert sim.duplicates() == {}, "nothing posted twice"
        assert bool(sim.jobs.jobs) is batch, "sales went in async batches when set"
        code, report = await reconcile(config)  # through the WAN, as the hub would

    assert report["differences"] == [], report["differences"]
    assert code == 0
    assert report["clean"] is True
    # 30 sales + 2 golden sales, 3 of them split (invoice + 2 payments), 2 returns, 2 exchanges
    # (two records each), and with return authorizations one more for each return and
    # exchange: what NetSuite holds for the day is what the store expected.
    records = 32 + 3 * 2 + 2 + 4 + (4 if batch else 0)
    assert report["records_in_netsuite"] == report["records_expected"] == records
    assert report["store"]["transactions"] == {
        "drawer_event": 1, "exchange": 2, "no_sale": 1, "paid_in": 1, "return": 2, "sale": 32,
    }  # fmt: skip
    assert len(acked) == 39

    # Afterwards someone in finance deletes a sale, edits a refund, keys a sale by hand.
    sale = golden("sale_cash")
    refund = golden("return_with_receipt")
    sim.records.delete("cashSale", f"eid:{external_id(sale['txn_id'])}")
    sim.records.update(
        "cashRefund",
        f"eid:{external_id(refund['txn_id'])}",
        {"item": {"items": [{"item": {"id": mapping(sim)["items"]["SKU-MUG"]}, "amount": 9.99}]}},
        0.0,
    )
    sim.records.create(
        "cashSale",
        {
            "entity": {"id": sim.walk_in_customer_id()},
            "tranDate": DAY.isoformat(),
            "memo": f"Store {STORE} / keyed by hand",
            "item": {"items": [{"item": {"id": mapping(sim)["items"]["SKU-MUG"]}, "amount": 9.9}]},
        },
        0.0,
    )
    code, report = await _reconcile_direct(config, netsuite.url)
    kinds = {(d["kind"], d["txn_id"]) for d in report["differences"]}
    assert ("missing", sale["txn_id"]) in kinds
    assert ("amount", refund["txn_id"]) in kinds
    assert any(kind == "extra" for kind, _ in kinds)
    assert len(report["differences"]) == 3
    assert code == 1
    # The technician's form of the same answer.
    process = await asyncio.create_subprocess_exec(
        EDGE, "--config", str(config.with_name("direct.toml")), "reconcile", "--date",
        DAY.isoformat(), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    human = (await process.communicate())[0].decode()
    assert process.returncode == 1
    assert "3 difference(s): 1 amount, 1 extra, 1 missing" in human
    assert f"store {STORE}, {DAY}: 1 drawer_event, 2 exchange" in human


async def _reconcile_direct(config: Path, ns_url: str) -> tuple[int, dict[str, Any]]:
    """`edge reconcile` with the NetSuite URL pointed straight at the simulator."""
    text = config.read_text()
    start = text.index('base_url = "') + len('base_url = "')
    end = text.index('"', start)
    direct = config.with_name("direct.toml")
    direct.write_text(text[:start] + ns_url + text[end:])
    return await reconcile(direct)


def _flat(raw: dict[str, Any]) -> dict[str, Any]:
    """``hub_settings`` overrides (section__name = value) for the same settings."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            for name, inner in value.items():
                flat[f"{key}__{name}"] = inner
        else:
            flat[key] = value
    return flat


async def test_the_daily_journal_is_posted_balanced_and_reconciles(
    tmp_path: Path, broker: MosquittoProcess, netsuite: NetSuiteServer
) -> None:
    sim = netsuite.sim
    raw = settings_raw(tmp_path, broker.port, netsuite.url, sim)
    raw["uplink"]["netsuite"]["mapping"] = mapping(
        sim, posting="daily_journal", inventory_adjustments=True, inventory_account_id="500"
    )
    config = tmp_path / "edge.toml"
    config.write_text(toml(raw))
    async with run_hub(hub_settings(tmp_path, broker_port=broker.port, **_flat(raw))) as hub:
        documents = store_day()
        await submit_day(hub, documents)
        await outbox_empty(hub)
    assert not any(kind != "journalEntry" for kind, _ in sim.ledger()), (
        "in journal mode no transaction is posted on its own"
    )
    code, before = await reconcile(config)
    assert code == 1
    missing = sorted((d["kind"], d["expected"].split()[0]) for d in before["differences"])
    assert missing == [("missing", "inventoryAdjustment"), ("missing", "journalEntry")], (
        "the journal and the day's stock movement, not yet posted"
    )

    for _ in range(2):  # posting the day twice updates the one journal
        process = await asyncio.create_subprocess_exec(
            EDGE, "--config", str(config), "netsuite", "journal", "--date", DAY.isoformat(),
            "--post", "--json", stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        assert process.returncode == 0
    posted = json.loads(out)
    lines = posted["journal"]["line"]["items"]
    debits = sum(round(ln.get("debit", 0) * 100) for ln in lines)
    credits = sum(round(ln.get("credit", 0) * 100) for ln in lines)
    assert debits == credits > 0
    stock = posted["inventory_adjustment"]
    assert sim.ledger() == {
        ("journalEntry", posted["journal"]["externalId"]): 1,
        ("inventoryAdjustment", stock["externalId"]): 1,
    }
    assert posted["inventory_adjustment_id"] is not None
    assert all(line["adjustQtyBy"] != 0 for line in stock["inventory"]["items"])
    code, after = await reconcile(config)
    assert (code, after["differences"]) == (0, [])
    store_total = sum(float(t) for t in after["store"]["tenders"].values())
    assert abs(store_total - float(after["store"]["total"])) < 0.005


async def test_a_sale_deleted_in_netsuite_is_posted_again_by_the_technician_s_retry(
    tmp_path: Path, broker: MosquittoProcess, netsuite: NetSuiteServer
) -> None:
    """The fix docs/operations.md gives for reconcile's `missing` on a delivered sale: `edge
    outbox retry` (by the seq `edge outbox list` shows) posts it again; NetSuite then holds it
    once more and the day reconciles clean. The audit trail says who re-sent it and why."""
    sim = netsuite.sim
    raw = settings_raw(tmp_path, broker.port, netsuite.url, sim)
    config = tmp_path / "edge.toml"
    config.write_text(toml(raw))
    sale = golden("sale_cash")
    eid = external_id(sale["txn_id"])
    async with run_hub(hub_settings(tmp_path, broker_port=broker.port, **_flat(raw))) as hub:
        assert hub.outbox is not None
        store = hub.outbox.store
        await submit_day(hub, [sale])
        await outbox_empty(hub)
        first = await store.get(sale["txn_id"])
        assert first is not None
        assert first.status == "delivered"
        sim.records.delete("cashSale", f"eid:{eid}")  # someone in finance
        code, report = await reconcile(config)
        assert (code, [(d["kind"], d["txn_id"]) for d in report["differences"]]) == (
            1,
            [("missing", sale["txn_id"])],
        )

        process = await asyncio.create_subprocess_exec(
            EDGE, "outbox", "--url", hub.http.url, "retry", str(first.seq),
            "--reason", "deleted in NetSuite by mistake", "--actor", "ana",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await process.communicate())[0].decode()
        assert process.returncode == 0, out
        assert f"{sale['txn_id']} (seq {first.seq}): now pending" in out
        await outbox_empty(hub)
        again = await store.get(sale["txn_id"])
        assert again is not None
        assert again.status == "delivered"
        assert again.record_id == f"cashSale:{sim.records.get('cashSale', f'eid:{eid}').id}"
        assert again.record_id != first.record_id, "a new record: the old one is gone"
        audit = await store.audit_log(sale["txn_id"])
        code, report = await reconcile(config)
    assert [(a["action"], a["actor"], a["reason"]) for a in audit] == [
        ("resend", "ana", "deleted in NetSuite by mistake")
    ]
    assert (code, report["differences"]) == (0, [])
    assert sim.ledger()[("cashSale", eid.lower())] == 2, "created, deleted, created once more"
