"""Outbox benchmarks (issue 3), each against a baseline measured in the same run.

1. Durable acks: lanes hand over sales to a hub process (``txn.submit``: validate, group
   commit with fsync, reply) vs the same lanes against a bare MQTT echo process through the
   same broker. Figures: acks/s and p50/p99 at 1, 10 and 50 lanes, each from the median of
   three interleaved echo/hub rounds (all three are listed). Targets: >= 80 % of the echo's
   throughput, p99 <= 2x the echo's. Reported beside them: the same lanes against the hub's
   ``ping`` (its request/response layer alone, in the same process and rounds), the CPU per
   sale behind each ratio, and at 1 lane the floors that one raw fsynced SQLite commit on this
   disk puts under the ack's p50 and p99.
2. Drain: a 100,000-transaction backlog drained by the hub to the HQ simulator, against the
   simulator's own limit (concurrency x batch / latency), timed from the first batch the
   simulator receives to the last sale committed (the hub's start is reported apart).
   Target >= 90 %.
3. Bytes on disk per sale (outbox file + WAL / items), reported.
4. Outage at scale: a 50,000-sale backlog and the WAN cut, then the WAN returns: time from
   the first good probe to the drain running, and ack latency of new sales during the drain
   vs before the WAN returned. Target: draining within 1 s of the first good probe; acks at
   normal latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import plots
from bench.common import CpuSample, CpuUse, Figure, Report, free_port, mosquitto, percentile
from edge.bus import Requester, Topics
from edge.outbox.store import Entry, OutboxStore
from edge.outbox.validate import validate
from edge.sim import HqApiSimulator, WanProxy, run_hq_api
from edge.sim.process import HubProcess, write_config
from edge.sim.registers import make_sale

STORE = "bench"
LANE_COUNTS = (1, 10, 50)
DURATION_S = 3.0
ROUNDS = 3
"""Interleaved rounds of echo and hub per lane count; the report takes the round whose ratio
is the median (single runs on a shared 2-core machine vary by 10-20 %) and lists all."""
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "100000"))
OUTAGE_BACKLOG = int(os.environ.get("BENCH_OUTAGE_BACKLOG", "50000"))


def hub_config(
    tmp: Path, broker_port: int, cloud_url: str = "", http_port: int = 0, **outbox: object
) -> Path:
    sections: dict[str, object] = {
        "store_id": STORE,
        "hub_id": "hub-bench",
        "state_dir": str(tmp / "state"),
        "broker": {"mode": "external", "port": broker_port},
        "http": {"port": http_port or free_port()},
        "log": {"level": "WARNING"},
        "outbox": {"min_free_bytes": 0, **outbox},
    }
    if cloud_url:
        sections["outbox"] = {"min_free_bytes": 0, "connector": "hq_http", **outbox}
        sections["uplink"] = {"hq_http": {"url": cloud_url, "token": "sim-token"}}
    return write_config(tmp / "edge.toml", sections)


@contextlib.asynccontextmanager
async def echo_process(port: int, topic: str) -> AsyncIterator[int]:
    """The echo responder in its own process; yields its pid."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.echo_server", "--port", str(port), "--topic", topic,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 20)
    try:
        yield process.pid
    finally:
        process.terminate()
        await process.wait()


async def drive(
    port: int, lanes: int, topic_of: object, duration: float
) -> tuple[int, list[float]]:
    """``lanes`` registers, each sending sales one after the other for ``duration``."""
    topics = Topics(STORE)
    latencies: list[float] = []
    count = 0
    deadline = time.perf_counter() + duration
    run = uuid.uuid4().hex[:8]  # fresh txn ids for every run: a repeat would be a duplicate

    async def lane(i: int) -> None:
        nonlocal count
        lane_id = f"lane-{i}"
        rng = random.Random(i)
        async with Requester("127.0.0.1", port, client_id=f"bench-{lane_id}-{rng.random()}",
                             reply_topic=topics.lane_reply(lane_id)) as req:  # fmt: skip
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                sale = make_sale(store_id=STORE, lane_id=lane_id, number=n, rng=rng,
                                 txn_prefix=f"{run}-")  # fmt: skip
                started = time.perf_counter()
                reply = await req.request(topic_of(lane_id), sale, timeout=10)  # type: ignore[operator]
                latencies.append((time.perf_counter() - started) * 1000)
                if not reply.ok:
                    raise RuntimeError(f"refused: {reply.error}")
                count += 1

    await asyncio.gather(*(lane(i) for i in range(lanes)))
    return count, latencies


def raw_commits_ms(directory: Path, count: int = 1000) -> list[float]:
    """Baseline: ``count`` fsynced SQLite commits (WAL, synchronous=FULL) of a sale-sized row
    each, one after the other; the milliseconds each took."""
    import sqlite3

    db = sqlite3.connect(directory / "raw.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
    took = []
    for i in range(count):
        started = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?)", (str(i), b"x" * 1200))
        db.execute("COMMIT")
        took.append((time.perf_counter() - started) * 1000)
    db.close()
    return took


def echo_plus_commit(echo: list[float], commits: list[float], q: float) -> float:
    """The ``q`` percentile of an echo round trip plus one independent raw commit: what a
    responder that added nothing but that commit would show (200,000 random pairs)."""
    rng = random.Random(3)
    return percentile([rng.choice(echo) + rng.choice(commits) for _ in range(200_000)], q)


@dataclass
class Run:
    """One measured run of the lanes against one responder."""

    rate: float
    latencies: list[float]
    cpu: CpuUse


async def measured_drive(port: int, lanes: int, topic_of: object, pid: int) -> Run:
    """``drive`` for ``DURATION_S``, with the CPU the machine and the responder ``pid`` spent."""
    before = CpuSample.take(pid)
    n, latencies = await drive(port, lanes, topic_of, DURATION_S)
    return Run(n / DURATION_S, latencies, CpuUse.between(before, CpuSample.take(pid), n))


@dataclass
class Round:
    """One echo run and one hub run, back to back, at one lane count."""

    echo: Run
    hub: Run
    ping: Run
    """The hub's ``ping`` over the same lanes: its request/response layer without the intake."""

    @property
    def rate_ratio(self) -> float:
        return self.hub.rate / self.echo.rate

    @property
    def p99_ratio(self) -> float:
        return percentile(self.hub.latencies, 99) / percentile(self.echo.latencies, 99)


def median_round(rounds: list[Round], key: Callable[[Round], float]) -> Round:
    return sorted(rounds, key=key)[len(rounds) // 2]


async def ack_scaling(report: Report) -> None:
    print("outbox: durable acks vs bare echo (hub and echo in their own processes)", flush=True)
    topics = Topics(STORE)

    def echo_topic(lane: str) -> str:
        return f"store/{STORE}/echo/{lane}"

    def hub_topic(lane: str) -> str:
        return topics.lane_rpc(lane, "txn.submit")

    def ping_topic(lane: str) -> str:
        return topics.hub_rpc("ping")

    async with mosquitto() as port:
        with tempfile.TemporaryDirectory() as tmp:
            hub = HubProcess(hub_config(Path(tmp), port))
            await hub.start()
            rows: list[dict[str, float]] = []
            try:
                async with echo_process(port, f"store/{STORE}/echo/+") as echo_pid:
                    assert hub.process is not None
                    responders = {"echo": (echo_topic, echo_pid),
                                  "hub": (hub_topic, hub.process.pid),
                                  "ping": (ping_topic, hub.process.pid)}  # fmt: skip
                    order = list(responders)
                    for lanes in LANE_COUNTS:
                        for topic, _ in responders.values():
                            await drive(port, lanes, topic, 0.5)
                        rounds = []
                        for r in range(ROUNDS):
                            runs = {}
                            # Each goes first once: a drift of the machine cancels out.
                            for name in order[r % len(order) :] + order[: r % len(order)]:
                                topic, pid = responders[name]
                                runs[name] = await measured_drive(port, lanes, topic, pid)
                            rounds.append(Round(runs["echo"], runs["hub"], runs["ping"]))
                        mid = add_ack_figures(report, lanes, rounds, Path(tmp))
                        rows.append({
                            "lanes": lanes,
                            "hub_p50": percentile(mid.hub.latencies, 50),
                            "hub_p99": percentile(mid.hub.latencies, 99),
                            "echo_p50": percentile(mid.echo.latencies, 50),
                            "echo_p99": percentile(mid.echo.latencies, 99),
                        })  # fmt: skip
            finally:
                await hub.stop()
    plots.ack_latency(rows, report.directory / "ack-latency.png")
    report.pictures.append(("Ack latency against lanes", "ack-latency.png"))


def add_ack_figures(report: Report, lanes: int, rounds: list[Round], tmp: Path) -> Round:
    """The figures of one lane count; returns the round whose p99 ratio is the median (the
    one the latency plot shows)."""
    every = ", ".join(f"x{r.rate_ratio:.2f}" for r in rounds)
    mid = median_round(rounds, lambda r: r.rate_ratio)
    hub_p50, echo_p50 = percentile(mid.hub.latencies, 50), percentile(mid.echo.latencies, 50)
    report.add(Figure(
        f"durable acks/s, {lanes} lanes", mid.hub.rate, "acks/s", "bare echo", mid.echo.rate,
        ">= 80 % of echo", mid.hub.rate >= 0.8 * mid.echo.rate,
        f"median of {len(rounds)} interleaved rounds ({every}); "
        f"p50 {hub_p50:.2f} ms vs {echo_p50:.2f} ms",
    ))  # fmt: skip
    report.add(cpu_figure(lanes, mid))
    report.add(ping_figure(lanes, mid))
    commits = raw_commits_ms(tmp) if lanes == 1 else []
    if commits:
        floor = echo_plus_commit(mid.echo.latencies, commits, 50)
        report.add(Figure(
            "ack p50, 1 lane", hub_p50, "ms", "echo + one raw fsynced SQLite commit, p50", floor,
            "(reported)", True,
            f"the floor any durable ack pays on this disk (raw commit p50 "
            f"{percentile(commits, 50):.3f} ms)",
        ))  # fmt: skip
    every = ", ".join(f"x{r.p99_ratio:.2f}" for r in rounds)
    mid = median_round(rounds, lambda r: r.p99_ratio)
    h99, b99 = percentile(mid.hub.latencies, 99), percentile(mid.echo.latencies, 99)
    report.add(Figure(
        f"ack p99, {lanes} lanes", h99, "ms", "bare echo p99", b99, "<= 2x echo", h99 <= 2 * b99,
        f"median of {len(rounds)} interleaved rounds ({every}); fsync per commit group",
    ))  # fmt: skip
    if commits:
        floor = echo_plus_commit(mid.echo.latencies, commits, 99)
        report.add(Figure(
            "ack p99, 1 lane, against its floor", h99, "ms",
            "echo + one raw fsynced SQLite commit, p99", floor, "(reported)", True,
            f"that floor is x{floor / b99:.2f} the echo's p99 (raw commit p99 "
            f"{percentile(commits, 99):.3f} ms): the 2x target leaves the hub "
            f"{2 * b99 - floor:.3f} ms at the tail for everything else",
        ))  # fmt: skip
    return mid


def ping_figure(lanes: int, mid: Round) -> Figure:
    """The hub's request/response layer alone (``ping``) against the echo, and what the durable
    ack costs the hub's process on top of it. The ping answers with the whole sale (its data,
    echoed), about 1 KB where the echo answers 35 bytes: that costs it a few per cent (scratch,
    10 lanes: 0.82 of the echo, 0.89 with a tiny request and reply)."""
    ping, hub, echo = mid.ping, mid.hub, mid.echo
    return Figure(
        f"hub ping req/s, {lanes} lanes", ping.rate, "req/s", "bare echo", echo.rate,
        "(reported)", True,
        f"the hub's request/response layer without the intake (its reply echoes the sale, "
        f"about 1 KB against the echo's 35 bytes); its process "
        f"{ping.cpu.responder_us:.0f} µs/request vs the echo's {echo.cpu.responder_us:.0f}; "
        f"a durable ack adds {hub.cpu.responder_us - ping.cpu.responder_us:.0f} µs "
        f"(validation, the fsynced group commit, the ack)",
    )  # fmt: skip


def cpu_figure(lanes: int, mid: Round) -> Figure:
    """Where the throughput ratio comes from: the rate of a run is the machine's busy CPU over
    its CPU per sale, so the ratio of two runs is exactly (echo's CPU per sale / hub's) x (hub
    run's busy fraction / echo run's). The first factor is the ceiling while the CPU is the
    limit; what the second leaves is the hub leaving the machine idle."""
    hub, echo = mid.hub.cpu, mid.echo.cpu
    ceiling = echo.machine_us / hub.machine_us
    # What the hub's own process may spend per sale for 80 % at the echo's busy fraction,
    # the driver and the broker costing what they cost in the hub run.
    others = hub.machine_us - hub.responder_us
    allowed = echo.machine_us / 0.8 - others
    return Figure(
        f"machine CPU per sale, {lanes} lanes", hub.machine_us, "µs", "bare echo run",
        echo.machine_us, "(reported)", True,
        f"the acks/s ratio x{mid.rate_ratio:.2f} = x{ceiling:.2f} for CPU per sale (its "
        f"ceiling while the {os.cpu_count()} cores are the limit) x "
        f"x{hub.busy / echo.busy:.2f} for the machine's busy share ({hub.busy:.0%} vs "
        f"{echo.busy:.0%}); the responder alone "
        f"{hub.responder_us:.0f} vs {echo.responder_us:.0f} µs; 80 % asks the hub process "
        f"for at most {allowed:.0f} µs",
    )  # fmt: skip


async def fill_backlog(path: Path, count: int) -> float:
    """Append ``count`` validated sales to an outbox file; returns bytes per sale on disk."""
    store = OutboxStore(path, max_group=2000)
    await store.open()
    rng = random.Random(7)
    now = time.time()
    for start in range(0, count, 2000):
        batch = []
        for n in range(start, min(count, start + 2000)):
            sale = make_sale(store_id=STORE, lane_id=f"lane-{n % 8}", number=n, rng=rng)
            txn = validate(encode_sale(sale), max_bytes=1 << 20).txn
            batch.append(store.append(Entry.of(txn), now=now))
        await asyncio.gather(*batch)
    stats = await store.stats()
    await store.close()
    return stats.db_bytes / count


def encode_sale(sale: dict[str, object]) -> bytes:
    import json

    return json.dumps(sale).encode()


async def drain(report: Report) -> None:
    print(f"outbox: drain of a {BACKLOG}-sale backlog vs the simulator's limit", flush=True)
    latency, concurrency, batch = 0.1, 4, 100
    sim = HqApiSimulator(max_batch=batch, max_concurrency=concurrency, latency_s=latency)
    limit = sim.theoretical_events_per_s
    async with mosquitto() as port, run_hq_api(sim=sim) as hq:
        with tempfile.TemporaryDirectory() as tmp:
            per_sale = await fill_backlog(Path(tmp) / "state" / "outbox.db", BACKLOG)
            report.add(Figure("outbox bytes on disk per sale", per_sale, "bytes",
                              "JSON payload", 1400.0, "(reported)", True,
                              "file + WAL / items; baseline: a typical sale's JSON"))  # fmt: skip
            hub = HubProcess(hub_config(Path(tmp), port, hq.url, concurrency=concurrency,
                                        batch_max=batch))  # fmt: skip
            started = time.perf_counter()
            await hub.start(timeout=60)
            try:
                await hq.wait_until(lambda s: len(s.committed) >= BACKLOG)
            finally:
                finished = time.perf_counter()
                await hub.stop()
    # Timed from the hub's first batch: its start (opening a 100,000-item outbox) is not the
    # drain rate, and is reported apart.
    assert sim.stats.first_request_at is not None
    elapsed = finished - sim.stats.first_request_at
    startup = sim.stats.first_request_at - started
    stats = sim.stats.as_json()
    print(f"    simulator: {stats}", flush=True)
    rate = BACKLOG / elapsed
    report.add(Figure("backlog drain rate", rate, "sales/s", "simulator limit", limit,
                      ">= 90 % of limit", rate >= 0.9 * limit,
                      f"{BACKLOG} sales in {elapsed:.1f} s from the first batch (hub start "
                      f"{startup:.1f} s before); "
                      f"{concurrency} x {batch} / {latency} s"))  # fmt: skip


async def outage(report: Report) -> None:
    print(f"outbox: WAN outage with a {OUTAGE_BACKLOG}-sale backlog, then recovery", flush=True)
    topics = Topics(STORE)
    sim = HqApiSimulator(max_batch=100, max_concurrency=4, latency_s=0.05)
    async with mosquitto() as port, run_hq_api(sim=sim) as hq, WanProxy(hq.host, hq.port) as wan:
        with tempfile.TemporaryDirectory() as tmp:
            # A scaled outage: the store traded for hours with the WAN down. The backlog is
            # written before the hub starts, and the hub starts with the WAN already cut.
            await fill_backlog(Path(tmp) / "state" / "outbox.db", OUTAGE_BACKLOG)
            wan.mode = "refuse"
            http_port = free_port()
            config = hub_config(Path(tmp), port, f"http://127.0.0.1:{wan.port}", http_port,
                                breaker_cooldown_s=0.5, breaker_cooldown_cap_s=1.0)  # fmt: skip
            hub = HubProcess(config)
            await hub.start(timeout=60)
            depth = DepthSampler(f"http://127.0.0.1:{http_port}/api/v1/outbox")
            sampling = asyncio.create_task(depth.run())
            try:
                down_at = depth.now()
                # Acks while the hub holds the backlog and cannot send it (the breaker open).
                _, before = await drive(
                    port, 4, lambda lane: topics.lane_rpc(lane, "txn.submit"), 2.0
                )
                # Counted by what reaches HQ, re-sends included: a probe whose sale HQ had
                # committed just before a cut (its answer lost) adds nothing to the ledger.
                received = sim.stats.events_received
                restored = time.perf_counter()
                wan.mode = "pass"
                up_at = depth.now()
                await hq.wait_until(lambda s: s.stats.events_received > received)
                first_probe = time.perf_counter()  # the probe (one sale) reached HQ
                # Draining: the first full batch after the probe reached HQ.
                await hq.wait_until(lambda s: s.stats.events_received >= received + 101)
                draining = time.perf_counter()
                _, during = await drive(
                    port, 4, lambda lane: topics.lane_rpc(lane, "txn.submit"), 2.0
                )
                await depth.until_empty(timeout=60.0)
            finally:
                sampling.cancel()
                await hub.stop()
    plots.outage_depth(depth.samples, down_at, up_at, report.directory / "outage-depth.png")
    report.pictures.append(("Outbox depth through a WAN outage", "outage-depth.png"))
    report.add(Figure("drain starts after first good probe", (draining - first_probe) * 1000,
                      "ms", "1 s target", 1000.0, "<= 1 s", draining - first_probe <= 1.0,
                      "from the probe reaching HQ to the first full batch reaching it (the "
                      f"probe's own {sim.latency_s * 1000:.0f} ms answer included); WAN back to "
                      f"first probe: {(first_probe - restored) * 1000:.0f} ms (breaker "
                      "cooldown)"))  # fmt: skip
    p50_d, p50_b = percentile(during, 50), percentile(before, 50)
    p99_note = f"p99 {percentile(during, 99):.2f} vs {percentile(before, 99):.2f} ms"
    report.add(Figure("ack p50 while draining", p50_d, "ms",
                      "ack p50 before the WAN returned", p50_b, "normal latency (<= 2x)",
                      p50_d <= 2 * p50_b, p99_note))  # fmt: skip


class DepthSampler:
    """The hub's outbox depth every 0.1 s, read from its own API (GET /api/v1/outbox)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._started = time.perf_counter()
        self.samples: list[tuple[float, int]] = []
        self._empty = asyncio.Event()

    def now(self) -> float:
        return time.perf_counter() - self._started

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self._url) as response:
                        pending = int((await response.json())["pending"])
                    self.samples.append((self.now(), pending))
                    if pending == 0 and self.samples and max(d for _, d in self.samples) > 0:
                        self._empty.set()
                await asyncio.sleep(0.1)  # the sampling period, not a synchronisation

    async def until_empty(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._empty.wait()


async def run(report: Report) -> None:
    await ack_scaling(report)
    await drain(report)
    await outage(report)
