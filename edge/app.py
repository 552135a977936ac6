"""The composition root: every component is built here from Settings and run under one
TaskGroup. Nothing else wires components or reaches for globals.

Theory of operation
-------------------
Start, in order: open the stores (outbox, catalogue, lanes); the managed broker (and wait until
it accepts connections); the bus (connects and reconnects by itself); the HQ link, the outbox
sender, the catalogue service, the printers, displays and scales, the identity's certificate upkeep;
the HTTP server (loopback, and HTTPS on the store LAN once the hub has its identity); mDNS
discovery. Once the bus is connected, tell systemd READY=1 and start the watchdog pings.

Stop (SIGTERM/SIGINT or :meth:`Hub.request_stop`), bounded by ``shutdown.grace_s``: STOPPING=1;
the bus refuses new requests, lets in-flight ones finish, publishes the offline presence; then
the components are cancelled in reverse order of start (bus before broker, so the broker saves a
session that was closed cleanly); the HTTP server closes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import signal
import time
from collections import Counter
from collections.abc import Coroutine
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import msgspec

from edge.broker import BrokerSupervisor, LanSecurity
from edge.bus import Bus, RequestContext, RpcRouter, Topics
from edge.bus.client import Message
from edge.bus.envelope import LaneStatus
from edge.bus.errors import BusUnavailable
from edge.bus.takeover import take_over_session
from edge.catalogue.service import CatalogueService
from edge.catalogue.source import CatalogueSource, HqCatalogueSource
from edge.catalogue.store import CatalogueStore
from edge.console import catalogue_api, lanes_api, outbox_api
from edge.console.auth import Accounts
from edge.console.server import Check, HealthSource, HttpServer, build_app
from edge.console.web import ConsoleSource, add_console
from edge.console.web_auth import setup_auth
from edge.discovery import PRINTER_TYPE, Announcement, Discovery, HubAdvert
from edge.files import SpaceReserve
from edge.hq import api as hq_api
from edge.hq.apply import AttributeApplier, LaneConfigApplier
from edge.hq.commands import catalogue_sync, outbox_retry_parked
from edge.hq.errors import HqKeyError
from edge.hq.handler import CommandHandler
from edge.hq.link import HqLink, read_public_key
from edge.hq.telemetry import Snapshot, WanState
from edge.lanes.lifecycle import LaneState, Timers
from edge.lanes.registry import LaneRegistry, LaneStore
from edge.logs import RecentLogs
from edge.metrics import Metrics
from edge.outbox.intake import DiskGuard, Intake
from edge.outbox.sender import Sender
from edge.outbox.service import OutboxService
from edge.outbox.store import Appended, OutboxError, OutboxStore
from edge.relay.displays import Displays
from edge.relay.printers import Printers
from edge.relay.profiles import DEFAULT_DIR, ProfileError, Profiles, load_profiles
from edge.relay.scales import Scales
from edge.secrets import references
from edge.security import api as enrollment_api
from edge.security.enrollment import AttemptLimiter
from edge.security.identity import HUB_USER, Identity, is_initialized
from edge.security.service import Enrollment
from edge.settings import Settings, SettingsError
from edge.systemd import Notifier
from edge.uplink.base import Connector
from edge.uplink.hq_http import HqHttpConnector

log = logging.getLogger(__name__)

JOURNAL_CHECK_S = 2.0
"""How often the hub looks whether its request for the registers' journals changed."""

_lane_status = msgspec.json.Decoder(LaneStatus)


def _profiles_for_suggestions(settings: Settings) -> Profiles | None:
    """The device profiles the console suggests models from (edge.relay.identify). Advisory:
    a broken profile file costs the suggestions, with a warning, not the hub."""
    where = settings.devices.profiles_dir or DEFAULT_DIR
    try:
        return load_profiles(where)
    except ProfileError as exc:
        log.warning("devices: no profile suggestions: %s", exc)
        return None


def build_connector(settings: Settings) -> Connector | None:
    """The cloud connector the outbox drains to (None: keep, do not send)."""
    if settings.outbox.connector == "hq_http":
        hq = settings.uplink.hq_http
        return HqHttpConnector(
            base_url=hq.url,
            token=hq.token,
            store_id=settings.store_id,
            max_batch=hq.max_batch,
            max_concurrency=hq.max_concurrency,
            timeout_s=hq.timeout_s,
        )
    if settings.outbox.connector == "netsuite":
        return build_netsuite(settings)
    return None


def build_catalogue_source(
    settings: Settings, connector: Connector | None
) -> CatalogueSource | None:
    """Where the catalogue downsyncs from (None: nowhere). NetSuite shares the outbox's
    connector when it posts there too: one concurrency limit for the account, and a catalogue
    read never takes more than one of its slots (the source reads one query at a time)."""
    c = settings.catalogue
    if c.source == "hq":
        return HqCatalogueSource(
            base_url=c.url, token=c.token, page_size=c.page_size, timeout_s=c.timeout_s
        )
    if c.source == "netsuite":
        from edge.uplink.netsuite.catalogue import NetSuiteCatalogueSource
        from edge.uplink.netsuite.connector import NetSuiteConnector

        shared = isinstance(connector, NetSuiteConnector)
        netsuite = connector if shared else build_netsuite(settings)
        assert isinstance(netsuite, NetSuiteConnector)
        return NetSuiteCatalogueSource(
            netsuite, settings.uplink.netsuite.catalogue, owns_connector=not shared
        )
    return None


def build_netsuite(settings: Settings) -> Connector:
    from edge.uplink.netsuite.auth import account_host
    from edge.uplink.netsuite.connector import (
        NetSuiteConnector,
        OAuth2Credentials,
        TbaCredentials,
    )

    ns = settings.uplink.netsuite
    credentials: TbaCredentials | OAuth2Credentials
    if ns.auth == "tba":
        credentials = TbaCredentials(
            ns.consumer_key, ns.consumer_secret, ns.token_id, ns.token_secret
        )
    else:
        try:
            key = Path(ns.private_key_path).read_bytes()
        except OSError as exc:
            raise SettingsError(
                "settings", "uplink.netsuite.private_key_path", f"cannot read the key: {exc}"
            ) from exc
        credentials = OAuth2Credentials(ns.client_id, ns.certificate_id, key, ns.algorithm)
    return NetSuiteConnector(
        base_url=ns.base_url or f"https://{account_host(ns.account_id)}.suitetalk.api.netsuite.com",
        account_id=ns.account_id,
        credentials=credentials,
        mapping=ns.mapping,
        concurrency=ns.concurrency,
        timeout_s=ns.timeout_s,
        throttle_on_401=ns.throttle_on_401,
        batch=ns.batch,
        batch_size=ns.batch_size,
        batch_poll_s=ns.batch_poll_s,
        batch_wait_s=ns.batch_wait_s,
    )


def hub_version() -> str:
    try:
        return version("store-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


class Hub:
    def __init__(self, settings: Settings, *, notifier: Notifier | None = None) -> None:
        unresolved = references(settings)
        if unresolved:
            # A "secret:NAME" reaching a component would be sent to the cloud as a password.
            raise SettingsError(
                "settings",
                min(unresolved),
                "names a sealed secret that was not resolved (edge.secrets)",
            )
        self.settings = settings
        self.version = hub_version()
        self.metrics = Metrics()
        self.metrics.build.info(
            {"version": self.version, "store_id": settings.store_id, "hub_id": settings.hub_id}
        )
        self.topics = Topics(settings.store_id)
        self.notifier = notifier or Notifier()
        # The hub's identity (`edge init`) closes the LAN: mutual TLS on the broker's LAN
        # listener and the HTTPS API, a password on the hub's own loopback account.
        self.hub_identity: Identity | None = None
        self.credentials: tuple[str, str] | None = None
        lan_security: LanSecurity | None = None
        if is_initialized(settings.state_dir):
            self.hub_identity = Identity(settings.state_dir, self.topics)
            self.credentials = (HUB_USER, self.hub_identity.hub_password)
            i = self.hub_identity
            lan_security = LanSecurity(
                cafile=i.ca_path.resolve(),
                certfile=i.server_cert_path.resolve(),
                keyfile=i.server_key_path.resolve(),
                crlfile=i.crl_path.resolve(),
                acl_file=i.acl_path.resolve(),
                password_file=i.passwd_path.resolve(),
            )
        else:
            log.warning(
                "hub: no identity in %s (run `edge init --store ID`): the broker's LAN "
                "listener accepts any client",
                settings.state_dir,
            )
        self.broker: BrokerSupervisor | None = None
        if settings.broker.mode == "managed":
            self.broker = BrokerSupervisor(
                settings.broker,
                state_dir=settings.state_dir,
                metrics=self.metrics,
                security=lan_security,
            )
        self.bus = Bus(
            host=settings.broker.host,
            port=settings.broker.port,
            client_id=settings.client_id,
            topics=self.topics,
            hub_id=settings.hub_id,
            version=self.version,
            settings=settings.bus,
            metrics=self.metrics,
            credentials=self.credentials,
        )
        self.rpc = RpcRouter(
            bus=self.bus, topics=self.topics, settings=settings.bus, metrics=self.metrics
        )
        self.rpc.register("hub", "ping", self._ping)
        http_app = build_app(
            HealthSource(identity=self.identity, checks=self.checks, metrics=self.metrics)
        )
        self.outbox: OutboxService | None = None
        connector = build_connector(settings) if settings.outbox.enabled else None
        if settings.outbox.enabled:
            store = OutboxStore(settings.outbox_path, max_group=settings.outbox.max_group)
            sender = Sender(store, connector, settings.outbox, self.metrics) if connector else None
            self.disk = DiskGuard(settings.state_dir, settings.outbox.min_free_bytes)
            size = settings.outbox.reserve_bytes
            reserve = SpaceReserve(settings.state_dir / "space-reserve", size) if size else None
            self.outbox = OutboxService(store, sender, self.disk, self.metrics, reserve=reserve)
            self.intake = Intake(
                store,
                store_id=settings.store_id,
                disk=self.disk,
                max_bytes=settings.bus.max_request_bytes,
                clock=time.time,
                monotonic=time.monotonic,
                on_appended=self._on_txn_appended,
                # Built below; read at each sale. A line whose SKU the store's catalogue does
                # not hold is accepted and flagged UNKNOWN_SKU for review (protocol.md §7).
                unknown_skus=lambda skus: self.catalogue.store.unknown_skus(skus),
            )
            self.rpc.register("lane", "txn.submit", self.intake.submit)
            outbox_api.add_routes(http_app, self.outbox)
        day = 86400.0
        c = settings.catalogue
        self.catalogue = CatalogueService(
            CatalogueStore(
                settings.catalogue_path,
                tombstone_retention=c.tombstone_retention_days * day,
                snapshot_ratio=c.snapshot_ratio,
            ),
            build_catalogue_source(settings, connector),
            self.bus,
            topics=self.topics,
            metrics=self.metrics,
            interval=c.interval_s,
            retry_min=c.retry_min_s,
            register_stale_after=c.register_stale_after_days * day,
            spool_dir=settings.state_dir / "spool",
        )
        self.catalogue.register_rpc(self.rpc)
        catalogue_api.add_routes(http_app, self.catalogue)
        lanes = settings.lanes
        self.lanes = LaneRegistry(
            LaneStore(settings.state_dir / "lanes.db"),
            Timers(
                heartbeat_timeout_s=lanes.heartbeat_timeout_s,
                offline_warn_after_s=lanes.offline_warn_after_s,
                stale_after_s=lanes.stale_after_days * day,
                retire_after_s=lanes.retire_after_days * day,
                retire_warn_before_s=lanes.retire_warn_before_days * day,
            ),
            auto_enroll=lanes.auto_enroll,
            tick_s=lanes.tick_s,
            on_change=self._on_lanes_changed,
        )
        self.bus.route(self.topics.lane_status_filter(), self._on_lane_status)
        self.discovered_printers: dict[str, Announcement] = {}
        self.printer_discovered = asyncio.Event()
        """Set, then replaced by a fresh one, whenever a network printer is found (or found
        again) on mDNS, or leaves it: wait on the current one to see the next change."""
        self.discovery: Discovery | None = None
        if settings.discovery.enabled:
            d = settings.discovery
            self.discovery = Discovery(
                interfaces=list(d.interfaces),
                advert=HubAdvert(
                    store_id=settings.store_id,
                    hub_id=settings.hub_id,
                    address=d.advertise_address or d.interfaces[0],
                    mqtt_port=settings.broker.lan_port,
                    # Secured (`edge init`): the LAN listener is mutual TLS and the API is the
                    # HTTPS listener; a device checks the CA against this fingerprint.
                    api_port=settings.security.https_port
                    if self.hub_identity
                    else settings.http.port,
                    tls_port=settings.broker.lan_port if self.hub_identity else None,
                    ca_fingerprint=self.hub_identity.ca_fingerprint if self.hub_identity else None,
                ),
                on_found=self._on_announcement,
                on_lost=self._on_lost,
            )
        lanes_api.add_routes(http_app, self.lanes)
        self.printers = Printers(
            settings.devices, self.bus, self.topics, store_id=settings.store_id
        )
        self.printers.register_rpc(self.rpc)
        self.scales = Scales(settings.devices, self.bus, self.topics)
        self.scales.register_rpc(self.rpc)
        self.displays = Displays(settings.devices, self.bus, self.topics)
        self.displays.register_rpc(self.rpc)
        self.recent_logs = RecentLogs()
        self.console = ConsoleSource(
            identity=self.identity,
            outbox=self.outbox,
            lanes=self.lanes,
            catalogue=self.catalogue,
            logs=self.recent_logs,
            printers=self.printers if self.printers.printers else None,
        )
        self.console.scales = self.scales if self.scales.scales else None
        self.console.displays = self.displays if self.displays.displays else None
        self.console.discovered_printers = self.discovered_printers
        self.console.profiles = _profiles_for_suggestions(settings)
        # With a hub identity the console is also served over HTTPS on the store LAN (below);
        # the loopback listener stays plain HTTP for the CLI, so cookies cannot be Secure-only.
        setup_auth(http_app, Accounts.load(settings.console_accounts_path), secure_cookies=False)
        add_console(http_app, self.console)
        self.enrollment: Enrollment | None = None
        tls = None
        if self.hub_identity is not None:
            sec = settings.security
            self.enrollment = Enrollment(
                self.hub_identity,
                hub_id=settings.hub_id,
                cert_days=sec.cert_days,
                code_ttl_s=sec.code_ttl_s,
                limiter=AttemptLimiter(
                    per_client=sec.attempts_per_client,
                    overall=sec.attempts_overall,
                    window_s=sec.attempts_window_s,
                ),
                reload_broker=self._reload_broker,
                kick=self._kick,
                server_renew_before=dt.timedelta(days=sec.server_renew_before_days),
            )
            enrollment_api.add_routes(http_app, self.enrollment, settings.broker.lan_port)
            http_app.middlewares.append(
                enrollment_api.lan_gate(self.enrollment.device_certificate_valid)
            )
            i = self.hub_identity
            self.tls_context = enrollment_api.server_context(
                str(i.server_cert_path), str(i.server_key_path), str(i.ca_path)
            )
            tls = (sec.https_host or settings.broker.lan_bind, sec.https_port, self.tls_context)
            self.console.enrollment = self.enrollment
            self.console.lan_url = f"https://{tls[0]}:{tls[1]}"
        self.http = HttpServer(http_app, settings.http.host, settings.http.port, tls=tls)
        self.hq = self._build_hq_link() if settings.hq.enabled else None
        if self.hq is not None:
            hq_api.add_routes(http_app, self.hq)
            self.console.hq = self.hq
        self.started_at = time.monotonic()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()
        self.ready = asyncio.Event()
        """Set once every component has started and the bus is connected."""

    # -- what the HTTP layer and the CLI see -------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {
            "store_id": self.settings.store_id,
            "hub_id": self.settings.hub_id,
            "version": self.version,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }

    def checks(self) -> list[Check]:
        checks = []
        if self.broker is not None:
            checks.append(
                Check(
                    "broker",
                    self.broker.is_running,
                    f"managed mosquitto pid {self.broker.pid}, restarts {self.broker.starts - 1}"
                    if self.broker.is_running
                    else "managed mosquitto not running",
                )
            )
        where = f"{self.settings.broker.host}:{self.settings.broker.port}"
        if self.outbox is not None:
            open_ = self.outbox.store.is_open
            detail = str(self.outbox.store.path) if open_ else "not open"
            if notice := self.outbox.salvage_notice():
                detail += f"; {notice}"
            checks.append(Check("outbox", open_, detail))
            free = self.disk.free_bytes(time.monotonic())
            checks.append(
                Check(
                    "disk",
                    free >= self.disk.floor_bytes,
                    f"{free / 1e6:.0f} MB free (floor {self.disk.floor_bytes / 1e6:.0f} MB)",
                )
            )
        checks.append(
            Check(
                "bus",
                self.bus.is_connected,
                f"connected to {where}" if self.bus.is_connected else f"not connected to {where}",
            )
        )
        return checks

    def _build_hq_link(self) -> HqLink:
        settings = self.settings
        try:
            hq_key = read_public_key(settings.hq.public_key_file(settings.state_dir))
        except HqKeyError as exc:
            raise SettingsError("settings", "hq.public_key_path", str(exc)) from exc
        commands: dict[str, CommandHandler] = {}
        if self.catalogue.source is not None:
            commands["catalogue.sync"] = catalogue_sync(self.catalogue)
        if self.outbox is not None:
            commands["outbox.retry_parked"] = outbox_retry_parked(self.outbox)
        devices = frozenset(p.name for p in settings.devices.printers) | frozenset(
            s.name for s in settings.devices.scales
        )
        return HqLink(
            settings.hq,
            store_id=settings.store_id,
            hub_id=settings.hub_id,
            version=self.version,
            state_path=settings.state_dir / "hq-state.json",
            public_key=hq_key,
            snapshot=self._hq_snapshot,
            ready=self._hq_ready,
            appliers=[
                AttributeApplier(
                    "catalogue.interval_s",
                    self.catalogue,
                    "interval",
                    minimum=10.0,
                    maximum=86400.0,
                ),
                LaneConfigApplier(self.bus, self.topics, known_devices=devices),
            ],
            commands=commands,
        )

    def _hq_ready(self) -> bool:
        """The post-apply health check of HQ configs: started, and every check passing."""
        return self.ready.is_set() and all(check.ok for check in self.checks())

    async def _hq_snapshot(self) -> Snapshot:
        depth, parked, oldest, salvage = 0, 0, None, None
        wan: WanState = "unknown"
        if self.outbox is not None:
            salvage = self.outbox.salvage_notice()
            stats = await self.outbox.store.stats()
            depth, parked = stats.pending, stats.parked
            if stats.oldest_pending_at:
                oldest = max(0.0, time.time() - stats.oldest_pending_at)
            if self.outbox.sender is not None:
                wan = "up" if self.outbox.sender.breaker.state == "closed" else "down"
        devices = Counter(
            "online" if p.online else "offline" for p in self.printers.printers.values()
        )
        free = await asyncio.to_thread(shutil.disk_usage, self.settings.state_dir)
        return Snapshot(
            wan=wan,
            outbox_depth=depth,
            outbox_oldest_age_s=oldest,
            parked=parked,
            lanes={state.value: n for state, n in self.lanes.counts().items()},
            devices=dict(devices),
            catalogue_version=await self.catalogue.store.version(),
            free_disk_bytes=free.free,
            hub_version=self.version,
            outbox_salvage=salvage,
        )

    async def _ask_for_journals(self, outbox: OutboxService) -> None:
        """The retained request for the registers' journals (OutboxService.journal_request),
        or an empty message clearing an old one: at every connect, since a broker without
        persistence forgets retained messages when it restarts, and whenever it changes (the
        sender parks a damaged payload, a re-send repairs one), looked at every few
        seconds."""
        while True:
            await self.bus.wait_connected()
            published: bytes | None = None
            while self.bus.is_connected:
                request: bytes | None
                try:
                    request = await outbox.resend_request()
                except OutboxError as exc:  # closing, or damaged: the hub stops on that
                    log.debug("outbox: journal request not read: %s", exc)
                    request = published
                if request is not None and request != published:
                    try:
                        await self.bus.publish(self.topics.journal_resend, request, retain=True)
                    except BusUnavailable:
                        break
                    published = request
                with contextlib.suppress(TimeoutError):
                    await self.bus.wait_disconnected(timeout=JOURNAL_CHECK_S)

    def _on_txn_appended(self, appended: Appended) -> None:
        sender = self.outbox.sender if self.outbox is not None else None
        if not appended.duplicate:
            self.metrics.outbox_accepted.inc()
            if sender is not None:
                sender.note_accepted()
        elif appended.repaired and sender is not None:
            sender.wake()  # a parked item is due again: not only at the next idle poll

    # -- built-in methods --------------------------------------------------------------------

    def _on_lanes_changed(self, counts: dict[LaneState, int]) -> None:
        for state, n in counts.items():
            self.metrics.lanes.labels(state.value).set(n)

    def _on_announcement(self, found: Announcement) -> None:
        if found.kind == "printer":
            self.discovered_printers[found.identity] = found
            self._printers_changed()
            return
        self._background(
            self.lanes.on_discovered(
                found.identity,
                address=found.addresses[0],
                lane_id=found.properties.get("lane"),
                software=found.properties.get("sw"),
            )
        )

    def _on_lost(self, service_type: str, name: str) -> None:
        """A service said goodbye or its record expired. A printer leaves the discovered list
        (a configured one stays configured); a register's presence is the lanes' business."""
        if service_type == PRINTER_TYPE and name in self.discovered_printers:
            del self.discovered_printers[name]
            log.info("discovery: printer %s is gone from the network", name)
            self._printers_changed()

    def _printers_changed(self) -> None:
        self.printer_discovered.set()
        self.printer_discovered = asyncio.Event()

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_lane_status(self, message: Message) -> None:
        lane_id = message.topic.split("/")[3]
        await self.lanes.on_presence(lane_id, message.payload)
        try:
            gone = not message.payload or _lane_status.decode(message.payload).state == "offline"
        except msgspec.DecodeError:
            gone = False  # the registry logs a malformed presence
        if gone:
            self.scales.release_lane(lane_id)  # a scale is never held by a lane that left

    async def _ping(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        """``hub/rpc/ping``: echoes ``data`` back with the hub's time (a liveness probe for
        registers, and the baseline method of the benchmarks)."""
        return {"echo": msgspec.json.decode(data), "hub_time": dt.datetime.now(dt.UTC).isoformat()}

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger().addHandler(self.recent_logs)
        try:
            async with asyncio.TaskGroup() as tg:
                started: list[asyncio.Task[None]] = []
                outbox = self.outbox
                try:
                    if outbox is not None:
                        # Open before the bus subscribes: no request may find it closed.
                        await outbox.open()
                        started.append(tg.create_task(outbox.run_metrics(), name="outbox-metrics"))
                    await self.catalogue.store.open()
                    await self.lanes.open()
                    started.append(tg.create_task(self.lanes.run(), name="lanes"))
                    if self.broker is not None:
                        started.append(tg.create_task(self.broker.run(), name="broker"))
                        await self._unless_stopped(
                            self.broker.wait_ready(self.settings.broker.start_timeout_s + 5)
                        )
                    started.append(tg.create_task(self.bus.run(), name="bus"))
                    if self.hq is not None:
                        started.append(tg.create_task(self.hq.run(), name="hq-link"))
                    if outbox is not None and outbox.sender is not None:
                        started.append(tg.create_task(outbox.sender.run(), name="outbox-sender"))
                    if outbox is not None:
                        started.append(tg.create_task(self._ask_for_journals(outbox),
                                                      name="journal-resend"))  # fmt: skip
                    started.append(tg.create_task(self.catalogue.run(), name="catalogue"))
                    started.append(tg.create_task(self.printers.run(), name="printers"))
                    started.append(tg.create_task(self.displays.run(), name="displays"))
                    started.append(tg.create_task(self.scales.run(), name="scales"))
                    if self.enrollment is not None:
                        started.append(tg.create_task(self._maintain_identity(), name="identity"))
                    await self.http.start()
                    log.info("hub: http on %s", self.http.url)
                    if self.http.tls_url:
                        log.info("hub: https for the store LAN on %s", self.http.tls_url)
                    if self.discovery is not None:
                        started.append(tg.create_task(self.discovery.run(), name="discovery"))
                    await self._unless_stopped(self.bus.wait_connected())
                    if not self._stop.is_set():
                        self.ready.set()
                        self.notifier.notify("READY=1", "STATUS=ready")
                        log.info("hub: ready (store %s)", self.settings.store_id)
                        if self.notifier.watchdog_interval_s:
                            started.append(tg.create_task(self._watchdog(), name="watchdog"))
                    await self._stop.wait()
                    log.info("hub: stopping")
                    self.notifier.notify("STOPPING=1", "STATUS=stopping")
                    await self.bus.stop(self.settings.shutdown.grace_s)
                finally:
                    for task in reversed(started):
                        task.cancel()
                        await asyncio.wait([task])
                    if outbox is not None:
                        await outbox.store.close()
                    await self.catalogue.store.close()
                    await self.scales.aclose()
                    if self.catalogue.source is not None:
                        await self.catalogue.source.aclose()
                    await self.lanes.close()
        finally:
            await self.http.stop()
            logging.getLogger().removeHandler(self.recent_logs)
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("hub: stopped")

    async def _unless_stopped(self, awaitable: Any) -> None:
        """Await ``awaitable`` unless a stop is requested first (then cancel it)."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            elif not work.cancelled():
                work.exception()  # retrieved: the TaskGroup reports the failing component
        if not work.cancelled():
            work.result()

    async def _reload_broker(self) -> None:
        if self.broker is not None:
            await self.broker.reload()
        if self.hub_identity is not None:
            # New handshakes on the HTTPS listener use a renewed server certificate at once.
            i = self.hub_identity
            self.tls_context.load_cert_chain(str(i.server_cert_path), str(i.server_key_path))

    async def _kick(self, device: str) -> None:
        """Close a revoked device's live MQTT connection (session takeover by client id)."""
        try:
            await take_over_session(
                self.settings.broker.host, self.settings.broker.port, device, self.credentials
            )
        except Exception as exc:  # the revocation stands: the CRL refuses its next connect
            log.warning("enrollment: could not close %s's connection: %s", device, exc)

    async def _maintain_identity(self) -> None:
        assert self.enrollment is not None
        while True:
            try:
                await self.enrollment.maintain()
            except Exception:
                log.exception("enrollment: certificate maintenance failed; retrying later")
            await asyncio.sleep(self.settings.security.maintain_every_s)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s
        assert interval is not None
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
