"""NetSuite posting throughput (issue 4), against the simulated account's own limit in the same run.

A backlog of single-tender sales (one ``cashSale`` each) sits in a hub's outbox; the hub starts
with the NetSuite connector pointed at the simulator, which serves ``concurrency`` requests at
a time, each taking ``latency`` seconds (a 429 beyond that, as NetSuite does). The limit is
therefore ``concurrency / latency`` records per second; the figure is the records per second
the hub achieves from its start to the last record, and the target is >= 90 % of the limit.

Two service times: 300 ms, our assumption for a NetSuite record write (not measured: the
reference gives no figure; real writes are often slower, which only helps the ratio), and
50 ms, a stress case where the hub's own cost per request (signing, HTTP, its event loop
shared with the simulator in this process) shows.

``python -m bench.bench_netsuite --scale 0.2`` for a quick run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.bench_outbox import fill_backlog
from bench.common import Figure, Report, free_port
from edge.app import Hub
from edge.settings import settings_from_dict
from edge.sim.netsuite.auth import TbaCredential
from edge.sim.netsuite.server import NetSuiteSim, run_netsuite_sim
from edge.sim.registers import CATALOGUE

SCALE = float(os.environ.get("BENCH_NETSUITE_SCALE", "1"))
"""Each case posts about 15 s of sales at the limit, times this."""
TBA = TbaCredential("bench-ck", "bench-cs", "bench-tok", "bench-ts")


async def posting(report: Report, latency: float, scale: float = SCALE) -> None:
    concurrency = 5
    sales = max(50, int(15 * concurrency / latency * scale))
    print(f"netsuite: posting {sales} sales vs the account's limit", flush=True)
    sim = NetSuiteSim("1234567", catalogue_size=100, concurrency=concurrency, latency_s=latency)
    sim.auth.tba[(TBA.consumer_key, TBA.token)] = TBA
    limit = concurrency / latency
    skus = [sku for sku, *_ in CATALOGUE]
    ids = sim.active_item_ids(len(skus) + 1)
    async with run_netsuite_sim(sim) as ns:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "state"
            await fill_backlog(state / "outbox.db", sales)
            settings = settings_from_dict(
                {
                    "store_id": "bench",
                    "state_dir": str(state),
                    "broker": {"port": free_port(), "lan_port": free_port()},
                    "http": {"port": 0},
                    "log": {"level": "WARNING"},
                    "outbox": {"connector": "netsuite", "min_free_bytes": 0,
                               "concurrency": concurrency, "batch_max": 50},
                    "uplink": {"netsuite": {
                        "account_id": sim.account_id, "base_url": ns.url, "auth": "tba",
                        "consumer_key": TBA.consumer_key, "consumer_secret": TBA.consumer_secret,
                        "token_id": TBA.token, "token_secret": TBA.token_secret,
                        "concurrency": concurrency, "timeout_s": 10.0,
                        "mapping": {
                            "subsidiary_id": "1", "default_location_id": "1",
                            "walk_in_customer_id": sim.walk_in_customer_id(),
                            "items": {s: str(i) for s, i in zip(skus, ids, strict=False)},
                            "discount_item_id": str(ids[-1]),
                            "payment_methods": {"cash": "1", "card": "2"},
                        },
                    }},
                },
                "bench",
            )  # fmt: skip
            hub = Hub(settings)
            started = time.perf_counter()
            task = asyncio.create_task(hub.run(handle_signals=False))
            try:
                await ns.wait_until(lambda: len(sim.ledger()) >= sales)
                elapsed = time.perf_counter() - started
            finally:
                hub.request_stop()
                await task
    rate = sales / elapsed
    print(
        f"    simulator: {sim.requests} requests, answers {dict(sim.responses)}, "
        f"peak in flight {sim.peak_inflight}",
        flush=True,
    )
    refused = sim.refused_over_limit
    report.add(Figure(
        f"NetSuite posting rate, {latency * 1000:.0f} ms per record", rate, "records/s",
        "simulated account limit", limit,
        ">= 90 % of limit", rate >= 0.9 * limit,
        f"{sales} cashSales in {elapsed:.1f} s incl. hub start; {concurrency} in flight x "
        f"{latency * 1000:.0f} ms; peak in flight {sim.peak_inflight}, {refused} refused 429",
    ))  # fmt: skip


async def run(report: Report, scale: float = SCALE) -> None:
    for latency in (0.3, 0.05):
        await posting(report, latency, scale)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="NetSuite posting benchmark")
    parser.add_argument("--scale", type=float, default=SCALE)
    args = parser.parse_args(argv)
    asyncio.run(run(Report(), args.scale))


if __name__ == "__main__":
    main()
