"""The outbox as the rest of the hub sees it: status figures, operator actions, metrics.

Wraps the store, the sender (absent when no connector is configured) and the disk guard.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from edge.bus.envelope import JournalResend
from edge.files import SpaceReserve
from edge.metrics import Metrics
from edge.outbox.intake import DiskGuard
from edge.outbox.salvage import (
    RESEND_MARGIN_S,
    SalvageReport,
    finish_interrupted,
    journal_request,
    merged,
)
from edge.outbox.sender import Sender
from edge.outbox.store import Item, OutboxStore, Status, StoreDamaged

log = logging.getLogger(__name__)

METRICS_EVERY_S = 1.0


class OutboxService:
    def __init__(
        self,
        store: OutboxStore,
        sender: Sender | None,
        disk: DiskGuard,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        reserve: SpaceReserve | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self._disk = disk
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._opened_at = 0.0
        self._reserve = reserve
        self._reserve_failed = False
        self.reserve_held = asyncio.Event()
        """Set while the space reserve is held (:meth:`run_metrics` takes it back)."""

    async def open(self) -> None:
        """Open the store. A damaged file is salvaged first (edge.outbox.salvage): the hub
        starts on every item that could be read, and says what could not. On a disk below
        the floor the space reserve is released first: the hub's files need room to open."""
        self._opened_at = self._clock()
        await self._release_reserve_if_full()
        await asyncio.to_thread(finish_interrupted, self.store.path)
        try:
            await self.store.open(mark_running=True)
        except StoreDamaged as exc:
            log.error("outbox: %s; salvaging what can be read", exc)
            try:
                await self.store.salvage(now=self._clock())
            except (sqlite3.Error, OSError) as failed:
                # The hub stops with one line; the next start drops the partial copy and
                # tries again (a full disk: once space is freed).
                raise StoreDamaged(f"{exc}; the salvage failed: {failed}") from failed
            await self.store.open(mark_running=True)
        if self.store.unclean_stop is not None:
            log.warning(
                "outbox: the last run ended without closing the outbox; the registers are "
                "asked to re-send their journals from the last sale it holds"
            )

    async def _release_reserve_if_full(self) -> None:
        reserve = self._reserve
        if reserve is None:
            return
        free = self._disk.free_bytes(self._monotonic())
        if free < self._disk.floor_bytes and await asyncio.to_thread(reserve.release):
            log.warning(
                "outbox: the disk is below its floor (%d bytes free, floor %d): released the "
                "%d-byte space reserve so that the hub can open its files; sales are refused "
                "STORAGE_FULL until space returns",
                free, self._disk.floor_bytes, reserve.size,
            )  # fmt: skip
        if await asyncio.to_thread(reserve.held):
            self.reserve_held.set()
        else:
            self.reserve_held.clear()

    async def _keep_reserve(self, free: int) -> None:
        """Take the space reserve again once the disk has it to spare above the floor."""
        reserve = self._reserve
        if reserve is None or self.reserve_held.is_set():
            return
        if free - reserve.size < self._disk.floor_bytes:
            return
        try:
            await asyncio.to_thread(reserve.make)
        except OSError as exc:
            if not self._reserve_failed:  # tried again every second: said once
                log.warning("outbox: the %d-byte space reserve not made: %s", reserve.size, exc)
            self._reserve_failed = True
            return
        self._reserve_failed = False
        self.reserve_held.set()
        log.info("outbox: holding a %d-byte space reserve in %s", reserve.size, reserve.path)

    def salvage_notice(self) -> str | None:
        """The last salvage, while its damaged file is still on disk (a technician removes
        it, or sends it to support, once the registers have re-sent their journals)."""
        report = self._current_salvage()
        return None if report is None else report.summary()

    def _current_salvage(self) -> SalvageReport | None:
        report = self.store.salvage_report
        return report if report is not None and Path(report.damaged_file).exists() else None

    async def resend_request(self) -> bytes:
        """The retained message on the re-send topic: :meth:`journal_request`, or empty
        (clearing an old one)."""
        request = await self.journal_request()
        return b"" if request is None else msgspec.json.encode(request)

    async def journal_request(self) -> JournalResend | None:
        """What the registers are asked to re-send (docs/protocol.md), if anything: while a
        salvage that lost items is current (see :meth:`salvage_notice`); for this run when
        the last one ended without closing the store (a lying disk or a bad sector in the
        WAL's tail loses the last commits without an error, so the journals are asked from
        the last sale the hub still holds); and while items are parked because their payload
        was damaged on disk (their registers' re-sends repair them)."""
        asks = []
        report = self._current_salvage()
        if report is not None and report.needs_resend:
            asks.append(report.resend_request())
        if (unclean := self.store.unclean_stop) is not None:
            since = unclean.last_accepted_at - RESEND_MARGIN_S
            asks.append(journal_request(f"restart-{self._opened_at:.0f}", since, "unclean stop"))
        if (damage := await self.store.payload_damage()) is not None:
            asks.append(
                journal_request(
                    f"payload-{damage.first_seq}-{damage.items}",
                    damage.first_accepted_at - RESEND_MARGIN_S,
                    f"{damage.items} damaged payload{'s' if damage.items > 1 else ''}",
                )
            )
        return merged(asks) if asks else None

    async def status(self) -> dict[str, Any]:
        stats = await self.store.stats()
        now = self._clock()
        sender = self.sender.snapshot() if self.sender else {"connector": "none"}
        return {
            "pending": stats.pending,
            "parked": stats.parked,
            "delivered": stats.delivered,
            "oldest_pending_age_s": (now - stats.oldest_pending_at)
            if stats.oldest_pending_at
            else None,
            "accepted_per_min": self.sender.rates.accepted_per_min if self.sender else 0.0,
            "delivered_per_min": self.sender.rates.delivered_per_min if self.sender else 0.0,
            "connector": sender["connector"],
            "breaker": sender.get("breaker", {"state": "n/a"}),
            "inflight": sender.get("inflight", 0),
            "throttled_for_s": sender.get("throttled_for_s", 0.0),
            "disk_full_for_s": sender.get("disk_full_for_s", 0.0),
            "waiting": sender.get("waiting", {}),
            "salvage": self.salvage_notice(),
            "journal_request": msgspec.to_builtins(await self.journal_request()),
            "disk": {
                "free_bytes": self._disk.free_bytes(self._monotonic()),
                "floor_bytes": self._disk.floor_bytes,
                "db_bytes": stats.db_bytes,
            },
        }

    async def items(self, status: Status, limit: int, after_seq: int) -> list[Item]:
        return await self.store.list_items(status, limit=limit, after_seq=after_seq)

    async def item(self, ref: str) -> tuple[Item, list[dict[str, Any]]] | None:
        item = await self.store.find(ref)
        if item is None:
            return None
        return item, await self.store.audit_log(item.key)

    async def retry(self, ref: str, actor: str, reason: str) -> Item:
        item = await self.store.retry(ref, actor=actor, reason=reason, now=self._clock())
        self._wake()
        return item

    async def park(self, ref: str, actor: str, reason: str) -> Item:
        return await self.store.park(ref, actor=actor, reason=reason, now=self._clock())

    async def retry_all_parked(self, actor: str, reason: str) -> int:
        count = await self.store.retry_all_parked(actor=actor, reason=reason, now=self._clock())
        self._wake()
        return count

    def _wake(self) -> None:
        if self.sender is not None:
            self.sender.wake()

    async def run_metrics(self) -> None:
        """Refresh the gauges once a second (the figures HQ telemetry and alerts read)."""
        while True:
            if self.store.damage is not None:
                # Met by a sale, a delivery or a read: stop the hub; its restart salvages.
                raise self.store.damage
            stats = await self.store.stats()
            m = self._metrics
            m.outbox_pending.set(stats.pending)
            m.outbox_parked_now.set(stats.parked)
            m.outbox_db_bytes.set(stats.db_bytes)
            m.outbox_oldest_age.set(
                self._clock() - stats.oldest_pending_at if stats.oldest_pending_at else 0
            )
            free = self._disk.free_bytes(self._monotonic())
            m.disk_free_bytes.set(free)
            await self._keep_reserve(free)
            await asyncio.sleep(METRICS_EVERY_S)
