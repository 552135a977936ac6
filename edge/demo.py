"""`edge demo`: a whole store on one machine, riding out a scripted WAN outage.

Theory of operation
-------------------
One asyncio process runs, in this order:

1. the cloud: the NetSuite-shaped simulator (:mod:`edge.sim.netsuite`, the default) or the
   generic HQ API simulator (:mod:`edge.sim.hq_api`, ``--cloud hq``) on an ephemeral loopback
   port. For NetSuite, the hub's item, payment-method and customer mapping is taken from the
   simulated account, as a technician copies internal ids from NetSuite;
2. the WAN: a fault proxy (:mod:`edge.sim.wan_proxy`) in front of it; the hub is pointed at
   the proxy, never at the cloud directly;
3. the hub itself (:class:`edge.app.Hub`, the same object ``edge run`` runs), with its managed
   Mosquitto, its outbox connected to the cloud through the WAN;
4. ``--lanes`` simulated registers (:class:`edge.sim.registers.SimLane`) ringing up valid sales
   at a realistic pace, each handing its sales to the hub over MQTT and keeping them until the
   hub acknowledges them (a register's journal), and each following the hub's catalogue feed
   (:class:`edge.sim.catalogue_follower.FeedFollower`). The hub downsyncs the catalogue
   (``--catalogue-size`` items) from NetSuite through the WAN, or, with ``--cloud hq``, from
   the HQ catalogue simulator.

A script cuts the WAN (``blackhole``: packets vanish, as when the store's router loses its
uplink) at ``--outage-at`` for ``--outage-for`` seconds. The narrator prints what happens:
the store trading on, the outbox filling, the WAN coming back, the backlog draining. On Ctrl-C
(or after ``--duration``) the lanes stop, the outbox gets a bounded moment to drain, the hub
stops, and a summary checks the promise: every acknowledged sale in the cloud exactly once, or
still on the hub's disk to be sent on the next start; and every lane holding exactly the hub's
catalogue.

The figures come from the running parts themselves (the lanes' acknowledgements, the hub's
outbox status, the simulator's ledger): the narrator only reads and formats them
(:func:`status_line` and :func:`summary` are pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from collections.abc import Mapping as Mapping_
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import aiohttp
import msgspec

from edge.app import Hub
from edge.console.auth import Accounts
from edge.lanes.lifecycle import LaneState
from edge.security.identity import initialize, is_initialized
from edge.settings import PrinterSettings, Settings, load_settings
from edge.sim.catalogue_follower import FeedFollower, FeedRefused, hub_records
from edge.sim.enroll_client import DeviceCredentials, enroll
from edge.sim.hq_api import HqApiSimulator, run_hq_api
from edge.sim.hq_catalogue import DEFAULT_TOKEN, HqCatalogueSimulator, run_hq_catalogue
from edge.sim.netsuite.auth import TbaCredential
from edge.sim.netsuite.server import NetSuiteSim, run_netsuite_sim
from edge.sim.printer import PrinterEmulator
from edge.sim.registers import CATALOGUE, SimLane
from edge.sim.wan_proxy import WanProxy
from edge.uplink.netsuite.mapping import CatalogueMapping, Mapping, external_id

DRAIN_AT_STOP_S = 15.0
"""How long a stopping demo waits for the outbox to empty (the WAN being up)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    lanes: int = 8
    outage_at_s: float = 60.0
    outage_for_s: float = 60.0
    sale_every_s: float = 4.0
    """Mean seconds between two sales on one lane."""
    duration_s: float | None = None
    """Stop by itself after this long (None: run until Ctrl-C)."""
    report_every_s: float = 5.0
    seed: int = 1
    cloud: Literal["netsuite", "hq"] = "netsuite"
    catalogue_size: int = 500
    """Items in the simulated cloud's catalogue."""


@dataclass(slots=True)
class Figures:
    """One reading of the store, for the narrator."""

    elapsed_s: float
    wan: str
    rung: int
    acked: int
    pending: int
    oldest_pending_s: float | None
    parked: int
    in_cloud: int
    breaker: str
    lanes_online: int = 0


def status_line(f: Figures) -> str:
    oldest = "" if f.oldest_pending_s is None else f", oldest {f.oldest_pending_s:.0f} s"
    parked = f", {f.parked} parked" if f.parked else ""
    return (
        f"[{f.elapsed_s:4.0f}s] WAN {f.wan:<4} | lanes online {f.lanes_online:2d} | "
        f"sales acked {f.acked:5d} | "
        f"waiting in outbox {f.pending:5d}{oldest}{parked} | in the cloud {f.in_cloud:5d}"
    )


@dataclass(slots=True)
class Outcome:
    acked: set[str] = field(default_factory=set)
    """Every sale the hub acknowledged to a lane."""
    refused: dict[str, str] = field(default_factory=dict)
    committed_counts: dict[str, int] = field(default_factory=dict)
    """How many times the cloud recorded each acknowledged sale (absent: never)."""
    on_disk: dict[str, str] = field(default_factory=dict)
    """Outbox status (pending or parked) of the acknowledged sales the cloud does not have."""


def summary(o: Outcome) -> tuple[bool, list[str]]:
    """The closing verdict: (promise kept, lines to print)."""
    once = sorted(k for k in o.acked if o.committed_counts.get(k) == 1)
    twice = sorted(k for k in o.acked if o.committed_counts.get(k, 0) > 1)
    pending = sorted(k for k, status in o.on_disk.items() if status == "pending")
    parked = sorted(k for k, status in o.on_disk.items() if status == "parked")
    lost = sorted(o.acked - set(once) - set(twice) - set(pending) - set(parked))
    lines = [
        f"sales acknowledged by the hub: {len(o.acked)}",
        f"in the cloud exactly once:      {len(once)}",
        f"in the cloud more than once:    {len(twice)}",
        f"still on the hub's disk:        {len(pending)} (sent on the next start)",
        f"parked for a technician:        {len(parked)}",
        f"lost:                           {len(lost)}",
    ]
    if o.refused:
        lines.append(f"refused by the hub:             {len(o.refused)} (a simulator bug)")
    kept = not twice and not lost and not o.refused
    lines.append(
        "promise kept: every acknowledged sale is in the cloud once or still on disk"
        if kept
        else f"PROMISE BROKEN: duplicated {twice[:5]}, lost {lost[:5]}"
    )
    return kept, lines


class Cloud(Protocol):
    """The simulated cloud as the demo sees it: where it listens, how the hub is configured
    to reach it (through the WAN proxy), and its ledger."""

    name: str
    host: str
    port: int
    url: str

    def configure(self, settings: Settings, wan_url: str) -> Settings: ...

    def count(self, txn_id: str) -> int:
        """How many times the cloud recorded the transaction (0: never; 2+: a duplicate)."""
        ...

    def recorded(self) -> int:
        """Transactions recorded so far."""
        ...


@dataclass
class HqCloud:
    sim: HqApiSimulator
    host: str
    port: int
    url: str
    catalogue_url: str
    """The HQ catalogue simulator (reached directly: the WAN proxy fronts one server)."""
    name: str = "simulated HQ API"

    def configure(self, settings: Settings, wan_url: str) -> Settings:
        hq = msgspec.structs.replace(settings.uplink.hq_http, url=wan_url, token=self.sim.token)
        catalogue = msgspec.structs.replace(
            settings.catalogue, source="hq", url=self.catalogue_url, token=DEFAULT_TOKEN
        )
        return msgspec.structs.replace(
            settings,
            outbox=msgspec.structs.replace(settings.outbox, connector="hq_http"),
            uplink=msgspec.structs.replace(settings.uplink, hq_http=hq),
            catalogue=catalogue,
        )

    def count(self, txn_id: str) -> int:
        return self.sim.commit_count(txn_id)

    def recorded(self) -> int:
        return len(self.sim.committed)


#: Record types that carry a transaction's own external id (the others are its payments).
_PRIMARY_RECORDS = ("cashSale", "invoice", "cashRefund", "creditMemo")
_DEMO_TBA = TbaCredential("demo-consumer", "demo-consumer-secret", "demo-token", "demo-secret")
#: How the simulated account's items become the store's catalogue.
_DEMO_CATALOGUE = CatalogueMapping(
    enabled=True,
    custom_fields=["custitem_pos_tax_group"],
    tax_groups={"1": "REDUCED"},
    tax_codes={"STD": "0.19", "REDUCED": "0.07"},
    price_levels={"1": "base", "2": "employee"},
)


@dataclass
class NetSuiteCloud:
    sim: NetSuiteSim
    host: str
    port: int
    url: str
    name: str = "simulated NetSuite account"

    def mapping(self) -> Mapping:
        """The account's internal ids for the lanes' SKUs and tenders."""
        skus = [sku for sku, *_ in CATALOGUE]
        ids = self.sim.active_item_ids(len(skus) + 1)
        return Mapping(
            subsidiary_id="1",
            default_location_id="1",
            walk_in_customer_id=self.sim.walk_in_customer_id(),
            items={sku: str(item) for sku, item in zip(skus, ids, strict=False)},
            discount_item_id=str(ids[-1]),
            payment_methods={"cash": "1", "card": "2", "gift_card": "3"},
        )

    def configure(self, settings: Settings, wan_url: str) -> Settings:
        self.sim.auth.tba[(_DEMO_TBA.consumer_key, _DEMO_TBA.token)] = _DEMO_TBA
        ns = msgspec.structs.replace(
            settings.uplink.netsuite,
            account_id=self.sim.account_id,
            base_url=wan_url,
            auth="tba",
            consumer_key=_DEMO_TBA.consumer_key,
            consumer_secret=_DEMO_TBA.consumer_secret,
            token_id=_DEMO_TBA.token,
            token_secret=_DEMO_TBA.token_secret,
            concurrency=self.sim.concurrency,
            mapping=self.mapping(),
            catalogue=_DEMO_CATALOGUE,
        )
        return msgspec.structs.replace(
            settings,
            outbox=msgspec.structs.replace(settings.outbox, connector="netsuite"),
            uplink=msgspec.structs.replace(settings.uplink, netsuite=ns),
            catalogue=msgspec.structs.replace(settings.catalogue, source="netsuite"),
        )

    def count(self, txn_id: str) -> int:
        eid = external_id(txn_id)
        return sum(self.sim.count(kind, eid) for kind in _PRIMARY_RECORDS)

    def recorded(self) -> int:
        return sum(1 for kind, _ in self.sim.ledger() if kind in _PRIMARY_RECORDS)


@contextlib.asynccontextmanager
async def run_cloud(options: DemoOptions) -> AsyncIterator[Cloud]:
    """The simulated cloud the demo's WAN leads to, serving until the block ends."""
    if options.cloud == "hq":
        catalogue = HqCatalogueSimulator(options.catalogue_size, seed=options.seed)
        async with (
            run_hq_api(sim=HqApiSimulator(seed=options.seed)) as hq,
            run_hq_catalogue(sim=catalogue) as hq_catalogue,
        ):
            yield HqCloud(hq.sim, hq.host, hq.port, hq.url, hq_catalogue.url)
        return
    # NetSuite answers a record in a few hundred milliseconds, five at a time.
    sim = NetSuiteSim(catalogue_size=options.catalogue_size, latency_s=0.15)
    async with run_netsuite_sim(sim) as ns:
        host, port = ns.url.removeprefix("http://").rsplit(":", 1)
        yield NetSuiteCloud(sim, host, int(port), ns.url)


def demo_settings(
    config: str | None, state_dir: Path, env: Mapping_[str, str], timeout_s: str = "2.0"
) -> Settings:
    """The configuration (file and environment) with the demo's state directory; a short
    cloud timeout (overridable) so a blackholed WAN is noticed within seconds."""
    overrides = {
        "EDGE__STATE_DIR": str(state_dir),
        "EDGE__UPLINK__HQ_HTTP__TIMEOUT_S": env.get("EDGE__UPLINK__HQ_HTTP__TIMEOUT_S", timeout_s),
        "EDGE__UPLINK__NETSUITE__TIMEOUT_S": env.get(
            "EDGE__UPLINK__NETSUITE__TIMEOUT_S", timeout_s
        ),
    }
    return load_settings(config, env={**env, **overrides})


class Demo:
    def __init__(
        self,
        options: DemoOptions,
        *,
        config: str | None,
        state_dir: Path,
        out: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._config = config
        self._state_dir = state_dir
        self._out = out
        self._clock = clock
        self._started = clock()
        self.stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._rng = random.Random(options.seed)
        self._printer: PrinterEmulator | None = None

    def hurry(self) -> None:
        """Skip the final drain (a second Ctrl-C)."""
        self._hurry.set()

    def say(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def _elapsed(self) -> float:
        return self._clock() - self._started

    async def run(self) -> bool:
        """Run until :attr:`stop` is set (or the duration ends); True if the promise held."""
        async with (
            run_cloud(self.options) as cloud,
            WanProxy(cloud.host, cloud.port) as wan,
            PrinterEmulator() as printer,
        ):
            settings = cloud.configure(
                demo_settings(self._config, self._state_dir, os.environ),
                f"http://127.0.0.1:{wan.port}",
            )
            front = PrinterSettings(name="front", host="127.0.0.1", port=printer.port)
            settings = msgspec.structs.replace(
                settings, devices=msgspec.structs.replace(settings.devices, printers=[front])
            )
            self._printer = printer
            password = demo_login(settings)
            if not is_initialized(settings.state_dir):
                # As `edge init` on an appliance: the store's CA; the lanes enroll below.
                initialize(
                    settings.state_dir,
                    store_id=settings.store_id,
                    hub_id=settings.hub_id,
                    names=[],
                    addresses=[settings.broker.lan_bind],
                    hq_public_key=None,
                    now=dt.datetime.now(dt.UTC),
                )
            hub = Hub(settings)
            hub_task = asyncio.create_task(hub.run(handle_signals=False), name="hub")
            try:
                async with asyncio.timeout(60):
                    ready = asyncio.create_task(hub.ready.wait())
                    await asyncio.wait([ready, hub_task], return_when=asyncio.FIRST_COMPLETED)
                    ready.cancel()
                if hub_task.done():
                    await hub_task  # raises why the hub could not start
                    return False
                self._started = self._clock()
                return await self._trade(settings, hub, cloud, wan, password)
            finally:
                hub.request_stop()
                await hub_task

    async def _enroll(self, hub: Hub, lane_ids: list[str]) -> dict[str, DeviceCredentials]:
        """Each lane enrolls as a technician would have it: a one-time code, typed on the
        register, exchanged over HTTPS for a certificate (the hub checked by its CA)."""
        assert hub.enrollment is not None
        fingerprint = hub.enrollment.identity.ca_fingerprint
        enrolled: dict[str, DeviceCredentials] = {}
        for lane_id in lane_ids:
            created = await hub.enrollment.create_code(lane_id, "register")
            enrolled[lane_id] = await enroll(
                hub.http.tls_url, created.code, fingerprint=fingerprint, name=lane_id
            )
        self.say(
            f"enrolled {len(lane_ids)} lanes with one-time codes; the broker accepts nothing "
            f"but their certificates (CA {fingerprint[:19]}...)"
        )
        return enrolled

    async def _trade(
        self, settings: Settings, hub: Hub, cloud: Cloud, wan: WanProxy, password: str
    ) -> bool:
        o = self.options
        run_id = f"{int(time.time()) % 100000:05d}-"
        lane_ids = [f"lane-{n:02d}" for n in range(1, o.lanes + 1)]
        credentials = await self._enroll(hub, lane_ids)
        lanes = [
            SimLane(
                host=settings.broker.lan_bind,
                port=settings.broker.lan_port,
                store_id=settings.store_id,
                lane_id=lane_id,
                seed=o.seed * 1000 + n,
                interval_s=o.sale_every_s * self._rng.uniform(0.6, 1.4),
                txn_prefix=run_id,
                printer="front",
                tls=credentials[lane_id].ssl_context(),
            )
            for n, lane_id in enumerate(lane_ids, start=1)
        ]
        self.say(
            f"\nstore-edge demo: store {settings.store_id}, {o.lanes} lanes trading, "
            f"a WAN outage at {o.outage_at_s:.0f} s for {o.outage_for_s:.0f} s.\n"
            f"  console:  {hub.http.url}/   login {DEMO_USER} / {password}\n"
            f"  CLI:      edge status --url {hub.http.url}   "
            f"edge outbox --url {hub.http.url} status   "
            f"edge catalogue --url {hub.http.url} status\n"
            f"  lanes:    mqtts://{settings.broker.lan_bind}:{settings.broker.lan_port} "
            f"(mutual TLS, each lane enrolled with a one-time code)   "
            f"cloud ({cloud.name}): {cloud.url}\n"
            "Press Ctrl-C to stop.\n"
        )
        followers = [FeedFollower(hub.http.url, lane.lane_id) for lane in lanes]
        feed_stop = asyncio.Event()
        async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as tg:
            lane_tasks = [tg.create_task(lane.run(), name=lane.lane_id) for lane in lanes]
            feed = tg.create_task(
                self._follow_catalogue(hub, http, followers, feed_stop), name="feed"
            )
            script = tg.create_task(self._outage_script(hub, cloud, wan, lanes), name="outage")
            reporter = tg.create_task(self._report(hub, cloud, wan, lanes), name="narrator")
            if o.duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(o.duration_s):
                        await self.stop.wait()
            else:
                await self.stop.wait()
            self.say(f"[{self._elapsed():4.0f}s] stopping: the lanes close")
            for lane in lanes:
                lane.stop.set()
            await asyncio.gather(*lane_tasks)
            wan.mode = "pass"
            await self._drain(hub)
            script.cancel()  # after the drain: it may still narrate the backlog delivered
            reporter.cancel()
            # Not cancelled mid-request: the hub would log the request cut short as an error.
            feed_stop.set()
            await feed
            catalogue_ok, catalogue_line = await _catalogue_check(hub, http, followers)
        outcome = Outcome()
        for lane in lanes:
            outcome.acked |= lane.stats.acked
            outcome.refused |= lane.stats.refused
        outcome.committed_counts = {k: n for k in outcome.acked if (n := cloud.count(k))}
        if hub.outbox is not None:
            outcome.on_disk = {
                key: status
                for key, status in (
                    await hub.outbox.store.statuses(outcome.acked - set(outcome.committed_counts))
                ).items()
                if status != "delivered"
            }
        kept, lines = summary(outcome)
        printed = sum(lane.stats.printed for lane in lanes)
        receipts = (
            f"receipts printed:               {printed} "
            f"(the emulated printer cut {len(self._printer.jobs) if self._printer else 0})"
        )
        self.say("\n" + "\n".join([*lines, catalogue_line, receipts]))
        return kept and catalogue_ok

    async def _outage_script(
        self, hub: Hub, cloud: Cloud, wan: WanProxy, lanes: list[SimLane]
    ) -> None:
        o = self.options
        await asyncio.sleep(max(0.0, o.outage_at_s - self._elapsed()))
        wan.mode = "blackhole"
        self.say(
            f"[{self._elapsed():4.0f}s] WAN DOWN (scripted, {o.outage_for_s:.0f} s): the lanes "
            "keep selling; every sale is acknowledged from the hub's disk"
        )
        await asyncio.sleep(o.outage_for_s)
        wan.mode = "pass"
        back_at = self._elapsed()
        pending = (await hub.outbox.status())["pending"] if hub.outbox else 0
        self.say(f"[{back_at:4.0f}s] WAN UP: {pending} sales waiting; draining to the cloud")
        # The backlog is delivered once the cloud holds as many sales as were acknowledged
        # when the WAN came back (the lanes keep selling meanwhile).
        backlog = sum(len(lane.stats.acked) for lane in lanes)
        await _outbox_until(hub, lambda: cloud.recorded() >= backlog)
        self.say(
            f"[{self._elapsed():4.0f}s] backlog delivered {self._elapsed() - back_at:.2f} s "
            "after the WAN came back"
        )

    async def _figures(
        self, hub: Hub, cloud: Cloud, wan: WanProxy, lanes: list[SimLane]
    ) -> Figures:
        status: dict[str, Any] = await hub.outbox.status() if hub.outbox else {}
        return Figures(
            elapsed_s=self._elapsed(),
            wan="up" if wan.mode == "pass" else "DOWN",
            rung=sum(lane.stats.rung for lane in lanes),
            acked=sum(len(lane.stats.acked) for lane in lanes),
            pending=int(status.get("pending", 0)),
            oldest_pending_s=status.get("oldest_pending_age_s"),
            parked=int(status.get("parked", 0)),
            in_cloud=cloud.recorded(),
            breaker=str(status.get("breaker", {}).get("state", "n/a")),
            lanes_online=hub.lanes.counts()[LaneState.ONLINE],
        )

    async def _report(self, hub: Hub, cloud: Cloud, wan: WanProxy, lanes: list[SimLane]) -> None:
        while True:
            await asyncio.sleep(self.options.report_every_s)
            self.say(status_line(await self._figures(hub, cloud, wan, lanes)))

    async def _follow_catalogue(
        self,
        hub: Hub,
        http: aiohttp.ClientSession,
        followers: list[FeedFollower],
        stop: asyncio.Event,
    ) -> None:
        """The lanes fetch the catalogue feed as registers do (here on the narrator's beat,
        instead of on the retained version topic); the narrator says when a version lands.
        Returns once ``stop`` is set, between two rounds of fetches."""
        shown = 0
        while not stop.is_set():
            for follower in followers:
                with contextlib.suppress(FeedRefused, aiohttp.ClientError):
                    await follower.pull(http)
            version = await hub.catalogue.store.version()
            if version != shown and all(f.cursor and f.cursor.endswith(f":{version}")
                                        for f in followers):  # fmt: skip
                stats = await hub.catalogue.store.stats()
                self.say(
                    f"[{self._elapsed():4.0f}s] catalogue version {version} "
                    f"({stats.items} items from {hub.catalogue.source_name}) on every lane"
                )
                shown = version
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.report_every_s):
                    await stop.wait()

    async def _drain(self, hub: Hub) -> None:
        if hub.outbox is None or (await hub.outbox.status())["pending"] == 0:
            return
        self.say(
            f"[{self._elapsed():4.0f}s] letting the outbox drain (at most {DRAIN_AT_STOP_S:.0f} s)"
        )
        empty = asyncio.ensure_future(_outbox_empty(hub))
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait([empty, hurry], timeout=DRAIN_AT_STOP_S, return_when="FIRST_COMPLETED")
        for task in (empty, hurry):
            task.cancel()


DEMO_USER = "demo"


def demo_login(settings: Settings) -> str:
    """A technician account for the demo's console, with a fresh password each run."""
    password = secrets.token_urlsafe(9)
    accounts = Accounts.load(settings.console_accounts_path)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if DEMO_USER in accounts.names():
        accounts.set_password(DEMO_USER, password)
    else:
        accounts.add(DEMO_USER, password)
    return password


async def _catalogue_check(
    hub: Hub, http: aiohttp.ClientSession, followers: list[FeedFollower]
) -> tuple[bool, str]:
    """Every lane fetches the feed once more: does each hold exactly the hub's catalogue?"""
    for _ in range(3):  # a sync may land between the lanes' fetch and the hub's read
        for follower in followers:
            with contextlib.suppress(FeedRefused, aiohttp.ClientError):
                await follower.pull(http)
        cursor, records = await hub_records(hub.catalogue.store)
        if cursor.endswith(":0"):
            # Not a broken promise: stopped before the first download finished.
            return True, "catalogue: the hub had not finished its first download"
        differ = [f.register for f in followers if (f.cursor, f.records) != (cursor, records)]
        if not differ:
            return True, (
                f"catalogue: every lane holds exactly the hub's {len(records)} records "
                f"(version {cursor.rsplit(':', 1)[1]})"
            )
    return False, f"CATALOGUE DIFFERS on {', '.join(differ)}"


async def _outbox_until(hub: Hub, predicate: Callable[[], bool]) -> None:
    """Return once ``predicate`` holds (checked after every batch the outbox finishes)."""
    outbox = hub.outbox
    if outbox is not None and outbox.sender is not None:
        await outbox.sender.wait_until(predicate)


async def _outbox_empty(hub: Hub) -> None:
    """Return once nothing is waiting in the outbox (checked after every finished batch)."""
    outbox = hub.outbox
    sender = outbox.sender if outbox is not None else None
    if outbox is None or sender is None:
        return

    async def empty() -> bool:
        return (await outbox.store.stats()).pending == 0

    await sender.wait_until(empty)


async def run_demo(
    options: DemoOptions, *, config: str | None, state_dir: Path, out: TextIO
) -> bool:
    """Run the demo until Ctrl-C/SIGTERM (a second one skips the final drain)."""
    demo = Demo(options, config=config, state_dir=state_dir, out=out)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if demo.stop.is_set():
            demo.hurry()
        demo.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await demo.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
