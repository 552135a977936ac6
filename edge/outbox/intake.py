"""Transaction intake: ``store/{store}/lane/{lane}/rpc/txn.submit``.

Theory of operation
-------------------
1. Refuse at once when the state directory's free space is below the floor
   (``STORAGE_FULL``, retryable): the register keeps the sale in its own journal and re-sends,
   and the hub never corrupts or half-writes anything by running the disk to zero.
2. Validate (edge.outbox.validate, pure): schema, totals to the cent, no card numbers. A refusal
   is a structured error with a stable code; nothing is written.
3. Check that the transaction belongs to this store and to the lane whose topic carried it.
4. Append to the outbox (group commit; returns once fsynced). A re-sent transaction gets its
   original sequence number; the same id with other content is ``TXN_ID_CONFLICT``.
5. Reply ``{"txn_id", "seq", "duplicate", "accepted_at", "flags"}``: the ack means "on disk".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from edge.bus import ErrorCode, RequestContext, RequestError
from edge.outbox.store import (
    Appended,
    Entry,
    KeyConflict,
    OutboxStore,
    StorageFull,
    StoreClosed,
    StoreDamaged,
)
from edge.outbox.validate import TransactionRejected, validate

log = logging.getLogger(__name__)

#: Larger requests are validated on a worker thread (typical sales are 1-3 KiB).
INLINE_VALIDATION_BYTES = 16 * 1024


class IntakeCode:
    STORAGE_FULL = "STORAGE_FULL"
    TXN_ID_CONFLICT = "TXN_ID_CONFLICT"
    STORE_MISMATCH = "STORE_MISMATCH"
    LANE_MISMATCH = "LANE_MISMATCH"


#: Codes the intake adds to the bus's own (docs/protocol.md lists them all).
INTAKE_ERROR_CODES: dict[str, tuple[bool, str]] = {
    IntakeCode.STORAGE_FULL: (
        True,
        "The hub's disk is below its free-space floor; keep the sale and re-send later.",
    ),
    IntakeCode.TXN_ID_CONFLICT: (
        False,
        "This txn_id was already accepted with different content.",
    ),
    IntakeCode.STORE_MISMATCH: (False, "The transaction names another store than this hub's."),
    IntakeCode.LANE_MISMATCH: (False, "The transaction's lane_id is not the lane of its topic."),
}


@dataclass
class DiskGuard:
    """Free-space floor of the outbox's filesystem, read at most once per ``interval_s``."""

    path: Path
    floor_bytes: int
    interval_s: float = 1.0
    statvfs: Callable[[Path], os.statvfs_result] = os.statvfs
    _checked_at: float = float("-inf")
    _free: int = 0

    def free_bytes(self, now: float) -> int:
        if now - self._checked_at >= self.interval_s:
            st = self.statvfs(self.path)
            self._free = st.f_bavail * st.f_frsize
            self._checked_at = now
        return self._free

    def below_floor(self, now: float) -> bool:
        return self.free_bytes(now) < self.floor_bytes


class Intake:
    def __init__(
        self,
        store: OutboxStore,
        *,
        store_id: str,
        disk: DiskGuard,
        max_bytes: int,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        unknown_skus: Callable[[Collection[str]], Collection[str]] | None = None,
        on_appended: Callable[[Appended], None] | None = None,
    ) -> None:
        """``on_appended``: called with every append's outcome (new, duplicate or repaired)."""
        self._store = store
        self._store_id = store_id
        self._disk = disk
        self._max_bytes = max_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._unknown_skus = unknown_skus
        self._on_appended = on_appended
        self.refused_for_disk = 0

    async def submit(self, ctx: RequestContext, data: msgspec.Raw) -> dict[str, Any]:
        # 1. Disk floor.
        if self._disk.below_floor(self._monotonic()):
            self.refused_for_disk += 1
            raise RequestError(
                IntakeCode.STORAGE_FULL,
                "the hub's disk is nearly full; keep the transaction and re-send later",
                retryable=True,
                details={"free_bytes": self._disk.free_bytes(self._monotonic())},
            )
        # 2. Validation (pure).
        raw = bytes(data)
        try:
            if len(raw) > INLINE_VALIDATION_BYTES:
                # A hostile 256 KiB payload can take ~0.3 s to scan: not on the event loop.
                accepted = await asyncio.to_thread(
                    validate, raw, unknown_skus=self._unknown_skus, max_bytes=self._max_bytes
                )
            else:
                accepted = validate(raw, unknown_skus=self._unknown_skus, max_bytes=self._max_bytes)
        except TransactionRejected as exc:
            raise RequestError(
                exc.code, exc.message, retryable=False, details={"path": exc.path}
            ) from None
        txn = accepted.txn
        # 3. Ownership.
        if txn.store_id != self._store_id:
            raise RequestError(
                IntakeCode.STORE_MISMATCH,
                f"transaction is for store {txn.store_id!r}; this hub serves {self._store_id!r}",
            )
        if ctx.lane is None or txn.lane_id != ctx.lane:
            raise RequestError(
                IntakeCode.LANE_MISMATCH,
                f"transaction lane_id {txn.lane_id!r} sent on the topic of lane {ctx.lane!r}",
            )
        # 4. Durable append.
        entry = Entry.of(txn, flags=tuple(flag.code for flag in accepted.flags))
        try:
            appended = await self._store.append(entry, now=self._clock())
        except KeyConflict as exc:
            raise RequestError(IntakeCode.TXN_ID_CONFLICT, str(exc), retryable=False) from None
        except StorageFull as exc:
            raise RequestError(IntakeCode.STORAGE_FULL, str(exc), retryable=True) from None
        except (StoreClosed, StoreDamaged) as exc:
            raise RequestError(ErrorCode.UNAVAILABLE, str(exc), retryable=True) from None
        if self._on_appended is not None:
            self._on_appended(appended)
        # 5. The ack.
        return {
            "txn_id": txn.txn_id,
            "seq": appended.seq,
            "duplicate": appended.duplicate,
            "accepted_at": dt.datetime.fromtimestamp(appended.accepted_at, dt.UTC).isoformat(),
            "flags": [msgspec.to_builtins(flag) for flag in accepted.flags],
        }
