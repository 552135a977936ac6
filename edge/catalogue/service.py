"""The catalogue's asyncio shell: downsync from the cloud, the retained version topic, lookups
and basket pricing over MQTT request/response, and the registers' feed positions.

Theory of operation
-------------------
*Downsync* (:meth:`CatalogueService.sync_once`; one at a time):

1. read the cloud cursor the store kept with the last applied delta;
2. ask the source (:mod:`edge.catalogue.source`): full or incremental;
3. incremental: apply each part as it arrives (:meth:`~edge.catalogue.store.CatalogueStore.
   apply_delta`), each in its own transaction with the cursor after it, so a failure on page 7
   keeps pages 1-6 and the next sync resumes at page 7;
4. full: spool the parts to a file next to the catalogue (length-prefixed; never all in memory),
   then :meth:`~edge.catalogue.store.CatalogueStore.load_full` reads them back on the store's
   writer thread, in ONE transaction;
5. record the outcome (:class:`SyncResult`, metrics) and, when the version moved, wake the
   announcer.

A failure at any step (the cloud unreachable or hung, a corrupt delta quarantined by the store,
a full disk) leaves the catalogue that was in service untouched: lookups, pricing and the feed
keep answering from it (in WAL mode readers never wait for the writer).

*When:* :meth:`CatalogueService.run` syncs at start, then every ``interval`` seconds, and at once
on :meth:`~CatalogueService.request_sync` (the HTTP ``POST /api/v1/catalogue/sync``, and the MQTT
method ``catalogue.sync`` that HQ's "catalogue changed" command arrives as). After a failure it
retries sooner: ``retry_min`` seconds, doubling up to ``interval``. Once a day it prunes
tombstones older than the store's retention, keeping those that an active register has not yet
passed.

*Announcing:* the version is retained on ``store/{store}/catalogue/version``
(:class:`CatalogueTopics`, :class:`VersionAnnouncement`), published after every change of
version and again after every reconnection of the bus, so a register that connects learns the
current version at once and fetches the feed only when its cursor is behind.

*Lookups* (MQTT ``catalogue.lookup``, HTTP ``GET /api/v1/catalogue/items/{code}``) and basket
pricing (MQTT ``catalogue.price``) read one consistent version through
:meth:`~edge.catalogue.store.CatalogueStore.pricing_view`.

*Registers:* each feed request names its register; :meth:`CatalogueService.note_feed` keeps the
register's cursor and last contact (in memory: after a restart the table fills again as the
registers poll). A register is ``current`` (at the version), ``behind``, or ``stale`` (no
contact for ``register_stale_after`` seconds): reported on ``GET /api/v1/catalogue``, in
``edge_catalogue_registers{state}``, and by :meth:`CatalogueService.registers` for HQ telemetry.

Error codes the catalogue's MQTT methods add to those of the bus (:data:`CATALOGUE_ERROR_CODES`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edge.bus.client import Bus
from edge.bus.envelope import ENVELOPE_VERSION
from edge.bus.errors import BusUnavailable, ErrorCode, RequestError
from edge.bus.rpc import RequestContext, RpcRouter, decode_data
from edge.bus.topics import Topics
from edge.catalogue.errors import (
    CatalogueError,
    DeltaQuarantined,
    InvalidBasket,
    NoPrice,
    StorageFull,
    StoreClosed,
    UnknownSku,
)
from edge.catalogue.feed import Cursor, FeedDecision
from edge.catalogue.model import BASE_PRICE_LEVEL, Item, Price, Promotion
from edge.catalogue.pricing import BasketLine, PricedBasket, price_basket
from edge.catalogue.source import CatalogueSource, SourceError, SourceRefused
from edge.catalogue.store import DAY, CatalogueStore
from edge.metrics import Metrics

__all__ = [
    "CATALOGUE_ERROR_CODES",
    "CatalogueMetrics",
    "CatalogueService",
    "CatalogueTopics",
    "LookupResult",
    "PriceInForce",
    "RegisterFeed",
    "SyncResult",
    "VersionAnnouncement",
]

log = logging.getLogger(__name__)


class CatalogueCode:
    """Stable error codes of the catalogue's MQTT methods (docs/protocol.md, Catalogue)."""

    ITEM_NOT_FOUND: Final = "ITEM_NOT_FOUND"
    CATALOGUE_NOT_READY: Final = "CATALOGUE_NOT_READY"
    UNKNOWN_SKU: Final = "UNKNOWN_SKU"
    NO_PRICE: Final = "NO_PRICE"
    INVALID_BASKET: Final = "INVALID_BASKET"


#: code -> (retryable, meaning), in the form of edge.bus.errors.ERROR_CODES.
CATALOGUE_ERROR_CODES: Final[dict[str, tuple[bool, str]]] = {
    CatalogueCode.ITEM_NOT_FOUND: (False, "No item has this barcode or SKU in the catalogue."),
    CatalogueCode.CATALOGUE_NOT_READY: (
        True,
        "The hub has no catalogue yet (its first download is running); retry shortly.",
    ),
    CatalogueCode.UNKNOWN_SKU: (False, "A basket line names a SKU the catalogue does not hold."),
    CatalogueCode.NO_PRICE: (False, "An item has no price at that level and time."),
    CatalogueCode.INVALID_BASKET: (
        False,
        "The basket cannot be priced as sent (a quantity, the time, too many lines).",
    ),
}

SyncMode = Literal["full", "delta", "none"]
FailureKind = Literal["unavailable", "refused", "quarantined", "storage_full", "store"]
RegisterState = Literal["current", "behind", "stale"]

# -- MQTT: topic and payloads ------------------------------------------------------------------


class CatalogueTopics:
    """The catalogue's topics, under the store's root (edge.bus.topics conventions)::

    store/{store}/catalogue/version      retained VersionAnnouncement (hub → all)
    """

    def __init__(self, topics: Topics) -> None:
        self.version = f"{topics.root}/catalogue/version"


class VersionAnnouncement(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Retained on ``store/{store}/catalogue/version``: the catalogue the hub serves now."""

    v: int = ENVELOPE_VERSION
    epoch: str
    """The catalogue's identity; a cursor of another epoch gets a snapshot."""
    version: int
    """A register whose cursor is ``<epoch>:<version>`` is current."""
    cursor: str
    """``<epoch>:<version>``, the cursor of a current register."""
    items: int
    updated_at: str
    """RFC 3339: when the hub last applied a change (or started serving this version)."""


class LookupRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``catalogue.lookup`` data: exactly one of ``code`` (barcode, else SKU), ``barcode``,
    ``sku``; the time and price level to price at (default: now, ``base``)."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    barcode: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None
    price_level: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = BASE_PRICE_LEVEL


class PriceRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``catalogue.price`` data: a basket to price."""

    lines: Annotated[list[BasketLine], msgspec.Meta(min_length=1, max_length=1000)]
    at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None
    price_level: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = BASE_PRICE_LEVEL


class PriceInForce(msgspec.Struct, kw_only=True):
    """The price a lookup found, every field present (``None``: an open bound)."""

    amount: Decimal
    """Per unit, or per kg for a weighed item."""
    level: str
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None

    @classmethod
    def of(cls, price: Price) -> PriceInForce:
        return cls(
            amount=price.amount,
            level=price.level,
            valid_from=price.valid_from,
            valid_to=price.valid_to,
        )


class LookupResult(msgspec.Struct, kw_only=True):
    """An item, its price in force at ``at`` and the promotions active then, all read from one
    catalogue version."""

    epoch: str
    version: int
    matched_by: Literal["barcode", "sku"]
    at: dt.datetime
    item: Item
    price: PriceInForce | None
    """At the asked level, else the ``base`` level; None if the item has neither at ``at``."""
    promotions: list[Promotion]


# -- metrics -------------------------------------------------------------------------------------


class CatalogueMetrics:
    """The catalogue's metrics, on the hub's registry (edge.metrics conventions: ``edge_``
    prefix, base units, no global registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.version = Gauge(
            "edge_catalogue_version", "The catalogue's version (last change sequence).", registry=r
        )
        self.items = Gauge("edge_catalogue_items", "Items in the catalogue.", registry=r)
        self.quarantined = Gauge(
            "edge_catalogue_quarantined", "Deltas from the cloud held in quarantine.", registry=r
        )
        self.last_sync = Gauge(
            "edge_catalogue_last_sync_timestamp_seconds",
            "When the last downsync ended, successful or not (epoch seconds).",
            registry=r,
        )
        self.last_success = Gauge(
            "edge_catalogue_last_success_timestamp_seconds",
            "When the last successful downsync ended (epoch seconds).",
            registry=r,
        )
        self.sync_seconds = Histogram(
            "edge_catalogue_sync_duration_seconds",
            "Duration of downsyncs, by mode (full, delta, none).",
            ["mode"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0),
            registry=r,
        )
        self.syncs = Counter(
            "edge_catalogue_syncs", "Downsyncs that succeeded, by mode.", ["mode"], registry=r
        )
        self.failures = Counter(
            "edge_catalogue_sync_failures",
            "Downsyncs that failed, by kind (unavailable, refused, quarantined, storage_full, "
            "store).",
            ["kind"],
            registry=r,
        )
        self.changes = Counter(
            "edge_catalogue_changes", "Changes applied (new sequence numbers).", registry=r
        )
        self.sync_parts = Gauge(
            "edge_catalogue_sync_parts",
            "Parts downloaded so far by the downsync in progress (0 when idle).",
            registry=r,
        )
        self.registers = Gauge(
            "edge_catalogue_registers",
            "Registers known to the feed, by state (current, behind, stale).",
            ["state"],
            registry=r,
        )
        self.feed_requests = Counter(
            "edge_catalogue_feed_requests",
            "Feed requests, by answer (delta, snapshot, current).",
            ["mode"],
            registry=r,
        )


# -- results and register state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncResult:
    ok: bool
    mode: SyncMode
    """``none``: the sync failed before knowing (the cloud unreachable)."""
    reason: str
    """The source's reason (``no_cursor``, ``cursor_expired``, ``changes``) or the error."""
    started_at: float
    duration_s: float
    parts: int
    changes: int
    version: int
    """The catalogue's version after the sync (unchanged by a failure)."""
    error: str | None = None
    failure: FailureKind | None = None
    retryable: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class RegisterFeed:
    register: str
    cursor: str | None
    """The cursor the register last presented: it holds the catalogue up to there."""
    served: str | None
    """The cursor it was last handed (it presents this next time if it applied the answer)."""
    last_mode: str
    first_seen: float
    last_contact: float


# -- the service ---------------------------------------------------------------------------------


def _rfc3339(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds")


_FRAME: Final = struct.Struct(">Q")


def _spooled_parts(path: Path) -> Iterator[bytes]:
    """The parts of a spool file (8-byte big-endian length, then the part). Read on the store's
    writer thread, one part in memory at a time."""
    with path.open("rb") as spool:
        while header := spool.read(_FRAME.size):
            (size,) = _FRAME.unpack(header)
            yield spool.read(size)


class CatalogueService:
    """See the module docstring. Build it, call :meth:`register_rpc` before the bus starts,
    open the store, then run :meth:`run` under the app's TaskGroup (cancel it to stop)."""

    def __init__(
        self,
        store: CatalogueStore,
        source: CatalogueSource | None,
        bus: Bus | None,
        *,
        topics: Topics,
        metrics: Metrics,
        interval: float = 300.0,
        retry_min: float = 5.0,
        register_stale_after: float = 7 * DAY,
        prune_every: float = DAY,
        spool_dir: Path | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.source = source
        self._bus = bus
        self.topics = CatalogueTopics(topics)
        self.metrics = CatalogueMetrics(metrics.registry)
        self.interval = interval
        self.retry_min = min(retry_min, interval)
        self.register_stale_after = register_stale_after
        self.prune_every = prune_every
        self._spool_dir = spool_dir or store.path.parent
        self._now = now
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[SyncResult]] = []
        self._changed = asyncio.Event()
        self._registers: dict[str, RegisterFeed] = {}
        self._last_prune = 0.0
        self.last_result: SyncResult | None = None
        self.last_success: SyncResult | None = None
        self.syncing: SyncMode | None = None
        """The mode of the sync in progress (``none`` until the source has answered)."""
        self.updated_at: float | None = None
        """When the version last changed (or the service started)."""
        self._known_version = 0  # the version at the last gauge refresh (for register states)

    @property
    def source_name(self) -> str:
        return "none" if self.source is None else self.source.name

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Sync now and on the interval; announce the version. Runs until cancelled."""
        self.updated_at = self._now()
        await self._refresh_gauges()
        try:
            async with asyncio.TaskGroup() as tg:
                if self.source is not None:
                    tg.create_task(self._sync_loop(), name="catalogue-sync")
                if self._bus is not None:
                    tg.create_task(self._announce_loop(self._bus), name="catalogue-announce")
        finally:
            for waiter in self._waiters:
                waiter.cancel()
            self._waiters.clear()

    def request_sync(self) -> asyncio.Future[SyncResult]:
        """Ask for a sync now; the future resolves with the first sync that STARTS after this
        call. Calling contract: only :meth:`run` resolves it."""
        waiter: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return waiter

    async def _sync_loop(self) -> None:
        failures = 0
        while True:
            waiters, self._waiters = self._waiters, []
            self._wake.clear()
            try:
                result = await self.sync_once()
            except Exception as exc:  # a bug, not a cloud failure: say so, keep serving
                log.exception("catalogue: sync failed unexpectedly")
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                failures += 1
                await self._wait_for_wake(min(self.interval, self.retry_min * 2.0**failures))
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(result)
            failures = 0 if result.ok else failures + 1
            delay = (
                self.interval
                if result.ok
                else min(self.interval, self.retry_min * 2.0 ** min(failures - 1, 20))
            )
            await self._prune_if_due()
            await self._wait_for_wake(delay)

    async def _wait_for_wake(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def sync_once(self) -> SyncResult:
        """One downsync (module docstring, steps 1-5). Never raises for a cloud or data failure:
        the result says what happened. Tests call it directly instead of running the loop."""
        async with self._lock:
            started, clock = self._now(), time.perf_counter()
            before = await self.store.version()
            mode: SyncMode = "none"
            reason = ""
            counts = [0, 0]  # parts, changes
            self.syncing = "none"
            try:
                if self.source is None:
                    raise SourceRefused("no catalogue source is configured", step="configuration")
                download = await self.source.fetch(await self.store.upstream_cursor())
                mode, reason = ("full" if download.full else "delta"), download.reason
                self.syncing = mode
                if download.full:
                    await self._load_full(download.parts, counts)
                else:
                    await self._apply_deltas(download.parts, counts)
                failure: tuple[FailureKind, CatalogueError] | None = None
            except SourceError as exc:
                kind: FailureKind = "refused" if isinstance(exc, SourceRefused) else "unavailable"
                failure = (kind, exc)
            except DeltaQuarantined as exc:
                failure = ("quarantined", exc)
            except StorageFull as exc:
                failure = ("storage_full", exc)
            except CatalogueError as exc:
                failure = ("store", exc)
            finally:
                self.syncing = None
                self.metrics.sync_parts.set(0)
            ended = self._now()
            after = await self.store.version()
            result = SyncResult(
                ok=failure is None,
                mode=mode,
                reason=reason,
                started_at=started,
                duration_s=time.perf_counter() - clock,
                parts=counts[0],
                changes=counts[1],
                version=after,
                error=None if failure is None else str(failure[1]),
                failure=None if failure is None else failure[0],
                retryable=failure is not None and failure[1].retryable,
            )
            self._record(result, ended)
            if after != before:
                self.updated_at = ended
                self._notify_changed()
            await self._refresh_gauges()
            return result

    def _record(self, result: SyncResult, ended: float) -> None:
        m = self.metrics
        m.sync_seconds.labels(result.mode).observe(result.duration_s)
        m.last_sync.set(ended)
        m.changes.inc(result.changes)
        self.last_result = result
        if result.ok:
            m.syncs.labels(result.mode).inc()
            m.last_success.set(ended)
            self.last_success = result
            if result.changes:
                log.info(
                    "catalogue: %s sync applied %d changes in %d parts (version %d, %.2fs)",
                    result.mode, result.changes, result.parts, result.version, result.duration_s,
                )  # fmt: skip
        else:
            assert result.failure is not None
            m.failures.labels(result.failure).inc()
            level = logging.WARNING if result.retryable else logging.ERROR
            log.log(level, "catalogue: sync failed (%s): %s", result.failure, result.error)

    async def _apply_deltas(self, parts: Any, counts: list[int]) -> None:
        async with contextlib.aclosing(parts):
            async for part in parts:
                counts[0] += 1
                self.metrics.sync_parts.set(counts[0])
                applied = await self.store.apply_delta(
                    part, now=self._now(), source=self.source_name
                )
                counts[1] += applied.changes

    async def _load_full(self, parts: Any, counts: list[int]) -> None:
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = await asyncio.to_thread(
            tempfile.mkstemp, prefix="catalogue-full-", suffix=".spool", dir=self._spool_dir
        )
        spool = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async with contextlib.aclosing(parts):
                    async for part in parts:
                        counts[0] += 1
                        self.metrics.sync_parts.set(counts[0])
                        await asyncio.to_thread(out.write, _FRAME.pack(len(part)) + part)
            applied = await self.store.load_full(
                _spooled_parts(spool), now=self._now(), source=self.source_name
            )
            counts[1] += applied.changes
        finally:
            await asyncio.to_thread(spool.unlink, True)

    async def _prune_if_due(self) -> None:
        now = self._now()
        if now - self._last_prune < self.prune_every:
            return
        self._last_prune = now
        epoch = self.store.epoch
        active = [
            Cursor.parse(r.cursor).seq
            for r in self._registers.values()
            if r.cursor is not None
            and r.cursor.startswith(epoch)
            and now - r.last_contact < self.register_stale_after
        ]
        try:
            pruned = await self.store.prune_tombstones(
                now=now, keep_after=min(active) if active else None
            )
        except CatalogueError as exc:
            log.warning("catalogue: pruning tombstones failed: %s", exc)
            return
        if pruned:
            log.info("catalogue: pruned %d tombstones", pruned)

    # -- announcing the version --------------------------------------------------------------

    def _notify_changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def announcement(self) -> VersionAnnouncement:
        stats = await self.store.stats()
        return VersionAnnouncement(
            epoch=stats.epoch,
            version=stats.version,
            cursor=str(Cursor(stats.epoch, stats.version)),
            items=stats.items,
            updated_at=_rfc3339(self.updated_at if self.updated_at is not None else self._now()),
        )

    async def _announce_loop(self, bus: Bus) -> None:
        announced: tuple[int, int] | None = None  # (bus connection number, version)
        while True:
            changed = self._changed  # taken before reading the version: no change is missed
            await bus.wait_connected()
            announcement = await self.announcement()
            key = (bus.connects, announcement.version)
            if key != announced:
                try:
                    await bus.publish(
                        self.topics.version, msgspec.json.encode(announcement), qos=1, retain=True
                    )
                    announced = key
                except BusUnavailable as exc:
                    log.info("catalogue: version not announced yet: %s", exc)
                    await bus.wait_disconnected()
                    continue
            await _first_of(changed.wait(), bus.wait_disconnected())

    # -- lookups and pricing -----------------------------------------------------------------

    async def lookup(
        self,
        *,
        code: str | None = None,
        barcode: str | None = None,
        sku: str | None = None,
        at: dt.datetime | None = None,
        price_level: str = BASE_PRICE_LEVEL,
    ) -> LookupResult | None:
        """The item with this barcode or SKU (``code``: barcode first, then SKU), its price
        and active promotions at ``at`` (default now); None if there is no such item."""
        when = at or dt.datetime.fromtimestamp(self._now(), dt.UTC)
        matched_by: Literal["barcode", "sku"] = "barcode"
        found: Item | None = None
        if code is not None or barcode is not None:
            found = await self.store.item_by_barcode(code or barcode or "")
        if found is None and (code is not None or sku is not None):
            matched_by = "sku"
            found = await self.store.item_by_sku(code or sku or "")
        if found is None:
            return None
        view = await self.store.pricing_view([found.sku])
        item = view.item(found.sku)
        if item is None:  # deleted between the two reads
            return None
        price = view.price(item.sku, price_level, when)
        if price is None and price_level != BASE_PRICE_LEVEL:
            price = view.price(item.sku, BASE_PRICE_LEVEL, when)
        promotions = sorted(view.promotions([item.sku], when), key=lambda p: p.promotion_id)
        return LookupResult(
            epoch=self.store.epoch,
            version=view.version,
            matched_by=matched_by,
            at=when,
            item=item,
            price=None if price is None else PriceInForce.of(price),
            promotions=promotions,
        )

    async def price(
        self,
        lines: list[BasketLine],
        *,
        at: dt.datetime | None = None,
        price_level: str = BASE_PRICE_LEVEL,
    ) -> PricedBasket:
        """Price a basket against one catalogue version (:func:`~edge.catalogue.pricing.
        price_basket`). Raises its :class:`~edge.catalogue.errors.PricingError`."""
        when = at or dt.datetime.fromtimestamp(self._now(), dt.UTC)
        view = await self.store.pricing_view([line.sku for line in lines])
        return price_basket(view, lines, when, price_level=price_level)

    # -- MQTT methods ------------------------------------------------------------------------

    def register_rpc(self, router: RpcRouter) -> None:
        """``catalogue.lookup`` and ``catalogue.price`` on both scopes (a register asks on its
        lane, a price checker on the hub); ``catalogue.sync`` on the hub scope."""
        for scope in ("hub", "lane"):
            router.register(scope, "catalogue.lookup", self._rpc_lookup)
            router.register(scope, "catalogue.price", self._rpc_price)
        router.register("hub", "catalogue.sync", self._rpc_sync)

    async def _ready(self) -> None:
        try:
            version = await self.store.version()
        except StoreClosed:
            raise RequestError(ErrorCode.UNAVAILABLE, "the catalogue is closed") from None
        if version == 0:
            raise RequestError(
                CatalogueCode.CATALOGUE_NOT_READY,
                "the hub has no catalogue yet; its first download is running",
                retryable=True,
            )

    async def _rpc_lookup(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        """``catalogue.lookup``: :class:`LookupRequest` in, :class:`LookupResult` out."""
        request = decode_data(data, LookupRequest)
        keys = [k for k in (request.code, request.barcode, request.sku) if k is not None]
        if len(keys) != 1:
            raise RequestError(
                ErrorCode.SCHEMA_INVALID, "give exactly one of code, barcode, sku - at `$.data`"
            )
        await self._ready()
        result = await self.lookup(
            code=request.code,
            barcode=request.barcode,
            sku=request.sku,
            at=request.at,
            price_level=request.price_level,
        )
        if result is None:
            which = "code" if request.code else "barcode" if request.barcode else "sku"
            raise RequestError(
                CatalogueCode.ITEM_NOT_FOUND,
                f"no item with {which} {keys[0]!r}",
                retryable=False,
                details={which: keys[0], "version": await self.store.version()},
            )
        return result

    async def _rpc_price(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        """``catalogue.price``: :class:`PriceRequest` in, a priced basket out."""
        request = decode_data(data, PriceRequest)
        await self._ready()
        try:
            return await self.price(request.lines, at=request.at, price_level=request.price_level)
        except UnknownSku as exc:
            raise RequestError(
                CatalogueCode.UNKNOWN_SKU, str(exc), retryable=False, details={"sku": exc.sku}
            ) from None
        except NoPrice as exc:
            raise RequestError(
                CatalogueCode.NO_PRICE,
                str(exc),
                retryable=False,
                details={"sku": exc.sku, "level": exc.level},
            ) from None
        except InvalidBasket as exc:
            raise RequestError(CatalogueCode.INVALID_BASKET, str(exc), retryable=False) from None

    async def _rpc_sync(self, ctx: RequestContext, data: msgspec.Raw) -> Any:
        """``catalogue.sync`` (HQ's "catalogue changed"): start a sync now; does not wait."""
        waiter = self.request_sync()
        waiter.add_done_callback(_retrieve)
        return {"requested": True, "version": await self.store.version()}

    # -- the registers' feed -----------------------------------------------------------------

    def note_feed(
        self, register: str | None, cursor: Cursor | None, decision: FeedDecision, served: str
    ) -> None:
        """Record a feed request: the register presented ``cursor`` and was handed ``served``
        (the cursor after the answer). Calling contract: after the answer was produced."""
        self.metrics.feed_requests.labels(decision.mode).inc()
        if register is None:
            return
        now = self._now()
        known = self._registers.get(register)
        if known is None:
            known = RegisterFeed(register, None, None, decision.mode, now, now)
            self._registers[register] = known
            log.info(
                "catalogue: register %s first fetched the feed (%s)", register, decision.reason
            )
        known.cursor = None if cursor is None else str(cursor)
        known.served = served
        known.last_mode = decision.mode
        known.last_contact = now
        self._refresh_register_gauges(now)

    def registers(self) -> list[dict[str, Any]]:
        """Every register that fetched the feed: cursor, how far behind, last contact, state."""
        now = self._now()
        rows = [self._register_row(r, now) for r in self._registers.values()]
        return sorted(rows, key=lambda row: row["register"])

    def stale_registers(self) -> list[str]:
        return [row["register"] for row in self.registers() if row["state"] == "stale"]

    def _register_row(self, r: RegisterFeed, now: float) -> dict[str, Any]:
        version = self._known_version
        behind: int | None = None
        if r.served is not None:
            served = Cursor.parse(r.served)
            if served.epoch == self.store.epoch:
                behind = max(0, version - served.seq)
        state: RegisterState
        idle = now - r.last_contact
        if idle >= self.register_stale_after:
            state = "stale"
        elif behind == 0:
            state = "current"
        else:
            state = "behind"
        return {
            "register": r.register,
            "state": state,
            "cursor": r.cursor,
            "served": r.served,
            "behind": behind,
            "last_mode": r.last_mode,
            "first_seen": _rfc3339(r.first_seen),
            "last_contact": _rfc3339(r.last_contact),
            "idle_s": round(idle, 1),
        }

    def _refresh_register_gauges(self, now: float) -> None:
        counts = dict.fromkeys(("current", "behind", "stale"), 0)
        for r in self._registers.values():
            counts[self._register_row(r, now)["state"]] += 1
        for state, n in counts.items():
            self.metrics.registers.labels(state).set(n)

    async def _refresh_gauges(self) -> None:
        stats = await self.store.stats()
        self._known_version = stats.version
        self.metrics.version.set(stats.version)
        self.metrics.items.set(stats.items)
        self.metrics.quarantined.set(stats.quarantined)
        self._refresh_register_gauges(self._now())

    # -- status ------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """What ``GET /api/v1/catalogue`` shows."""
        stats = await self.store.stats()
        registers = self.registers()
        counts = dict.fromkeys(("current", "behind", "stale"), 0)
        for row in registers:
            counts[row["state"]] += 1
        return {
            "epoch": stats.epoch,
            "version": stats.version,
            "cursor": str(Cursor(stats.epoch, stats.version)),
            "updated_at": None if self.updated_at is None else _rfc3339(self.updated_at),
            "stats": asdict(stats),
            "source": self.source_name,
            "upstream_cursor": await self.store.upstream_cursor(),
            "syncing": self.syncing,
            "last_sync": None if self.last_result is None else self.last_result.as_json(),
            "last_success": None if self.last_success is None else self.last_success.as_json(),
            "interval_s": self.interval,
            "registers": {"counts": counts, "stale": self.stale_registers(), "all": registers},
            "quarantine": [asdict(q) for q in await self.store.quarantined(10)],
        }


def _retrieve(future: asyncio.Future[SyncResult]) -> None:
    if not future.cancelled():
        future.exception()


async def _first_of(*awaitables: Awaitable[Any]) -> None:
    """Wait until the first of ``awaitables`` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
