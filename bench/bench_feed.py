"""Catalogue feed and hub memory benchmarks (issue 5), each against a baseline in the same run.

A catalogue of N items (N = ``BENCH_CATALOGUE_ITEMS``, default 1,000,000; each with a price)
is loaded into a real catalogue file. The hub's HTTP feed (:mod:`edge.console.catalogue_api`
on a real aiohttp server, loopback) serves it to a register that follows it exactly as
docs/protocol.md says (:class:`edge.sim.catalogue_follower.FeedFollower`: gzip, NDJSON, each
answer applied whole).

1. **A register 30 days stale**: 100,000 changes (price changes, as a month of them) after the
   register's cursor; the time from its first request to current. Target: <= 60 s.
2. **A one-day delta**: 5,000 changes; the same. Target: <= 2 s.
   Baseline of both: the same records read straight from the file with one raw SQLite query
   (the floor: what any feed must at least read), in the same run.
3. **Hub RSS with N items**: a real hub process (``edge run``, managed Mosquitto) on that
   catalogue file; peak RSS (VmHWM) after 2,000 lookups over HTTP and a whole snapshot served
   to a new register. Target: <= 150 MB. Baseline: the same hub on an empty catalogue.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.bench_catalogue import ITEMS, NOW, catalogue_parts, ean13
from bench.common import Figure, Report, free_port
from edge.bus import Topics
from edge.catalogue.model import Delta, encode
from edge.catalogue.service import CatalogueService
from edge.catalogue.store import CatalogueStore
from edge.console import catalogue_api
from edge.console.server import HttpServer
from edge.metrics import Metrics
from edge.sim.catalogue_follower import FeedFollower

STALE_CHANGES = 100_000
DAY_CHANGES = 5_000
LOOKUPS = 2000


def price_changes(items: int, count: int, bump: int) -> list[bytes]:
    """``count`` price changes spread over the catalogue, as deltas of 10,000."""
    from bench.bench_catalogue import make_price

    rng = random.Random(bump)
    picked = rng.sample(range(items), min(count, items))
    return [
        encode(
            Delta(
                delta_id=f"changes-{bump}-{start}",
                prices=[make_price(n, bump) for n in picked[start : start + 10_000]],
            )
        )
        for start in range(0, len(picked), 10_000)
    ]


def raw_read(path: Path, after: int) -> float:
    """Baseline: the records above ``after``, read by one raw SQLite query."""
    db = sqlite3.connect(path)
    started = time.perf_counter()
    rows = db.execute(
        "SELECT c.seq, c.entity, c.key, p.data FROM changes AS c"
        " LEFT JOIN prices AS p ON p.key = c.key WHERE c.seq > ? ORDER BY c.seq",
        (after,),
    ).fetchall()
    elapsed = time.perf_counter() - started
    db.close()
    assert rows
    return elapsed


async def catch_up(
    report: Report, store: CatalogueStore, url: str, items: int, changes: int, name: str,
    target_s: float, bump: int,
) -> None:  # fmt: skip
    async with aiohttp.ClientSession() as http:
        register = FeedFollower(url, f"reg-{bump}")
        register.cursor = f"{store.epoch}:{await store.version()}"
        after = await store.version()
        for part in price_changes(items, changes, bump):
            await store.apply_delta(part, now=NOW + bump)
        started = time.perf_counter()
        pulled = await register.pull(http, limit=50_000)
        elapsed = time.perf_counter() - started
    baseline = await asyncio.to_thread(raw_read, store.path, after)
    assert register.cursor == f"{store.epoch}:{await store.version()}"
    modes = sorted({p.mode for p in pulled})
    records = sum(p.records for p in pulled)
    report.add(Figure(
        name, elapsed, "s", "raw SQLite read of the same records", baseline,
        f"<= {target_s:g} s", elapsed <= target_s,
        f"{records:,} records in {len(pulled)} answer(s) ({', '.join(modes)}), gzip over "
        f"loopback HTTP, applied by the register; catalogue of {items:,} items",
    ))  # fmt: skip


async def feed(report: Report, path: Path, items: int) -> None:
    print(f"catalogue feed: registers catching up on {items:,} items", flush=True)
    store = CatalogueStore(path)
    await store.open()
    service = CatalogueService(store, None, None, topics=Topics("bench"), metrics=Metrics())
    from aiohttp import web

    app = web.Application()
    catalogue_api.add_routes(app, service)
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        await catch_up(
            report, store, server.url, items, STALE_CHANGES,
            "catalogue: a register 30 days stale (100,000 changes) current", 60.0, 1,
        )  # fmt: skip
        await catch_up(
            report, store, server.url, items, DAY_CHANGES,
            "catalogue: a one-day delta (5,000 changes) applied by a register", 2.0, 2,
        )  # fmt: skip
    finally:
        await server.stop()
        await store.close()


# --------------------------------------------------------------------------------------------
# Hub RSS.


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def hub_peak_rss(state: Path, items: int) -> float:
    """Start ``edge run`` on ``state``, look items up, serve one snapshot; its peak RSS."""
    http_port = free_port()
    env = {
        **os.environ,
        "EDGE__STATE_DIR": str(state),
        "EDGE__BROKER__PORT": str(free_port()),
        "EDGE__BROKER__LAN_PORT": str(free_port()),
        "EDGE__HTTP__PORT": str(http_port),
        "EDGE__LOG__LEVEL": "WARNING",
    }
    edge = str(Path(sys.executable).parent / "edge")
    process = await asyncio.create_subprocess_exec(
        edge, "run", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(60):
                while True:
                    try:
                        async with http.get(f"{url}/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
            if items:
                rng = random.Random(3)
                for _ in range(LOOKUPS):
                    code = ean13(rng.randrange(items))
                    async with http.get(f"{url}/api/v1/catalogue/items/{code}") as response:
                        assert response.status == 200, await response.text()
                await FeedFollower(url, "new-register").pull(http)
        return _peak_rss_mb(process.pid)
    finally:
        process.terminate()
        await process.wait()


async def hub_rss(report: Report, path: Path, items: int, directory: Path | None) -> None:
    print(f"hub RSS with {items:,} items", flush=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix="hub-rss-") as tmp:
        full, empty = Path(tmp) / "full", Path(tmp) / "empty"
        full.mkdir()
        empty.mkdir()
        shutil.copy(path, full / "catalogue.db")
        baseline = await hub_peak_rss(empty, 0)
        value = await hub_peak_rss(full, items)
    report.add(Figure(
        f"hub peak RSS with {items:,} items", value, "MB", "the same hub, empty catalogue",
        baseline, "<= 150 MB", value <= 150,
        f"VmHWM after {LOOKUPS:,} HTTP lookups and one whole snapshot served",
    ))  # fmt: skip


async def run(report: Report, items: int = ITEMS, directory: Path | None = None) -> None:
    with tempfile.TemporaryDirectory(dir=directory, prefix="feed-bench-") as tmp:
        path = Path(tmp) / "catalogue.db"
        store = CatalogueStore(path)
        await store.open()
        try:
            await store.load_full(iter(catalogue_parts(items)), now=NOW, source="bench")
        finally:
            await store.close()
        pristine = Path(tmp) / "pristine.db"
        shutil.copy(path, pristine)
        await feed(report, path, items)
        await hub_rss(report, pristine, items, directory)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="catalogue feed and hub memory benchmarks")
    parser.add_argument("--items", type=int, default=ITEMS)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args(argv)
    asyncio.run(run(Report(), args.items, args.dir))


if __name__ == "__main__":
    main()
