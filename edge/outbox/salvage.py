"""Salvage of a damaged outbox file: keep every sale SQLite can still read, say what it cannot.

A disk that lies about fsync, a bad sector or a filesystem fault can leave pages of the outbox
file unreadable: SQLite answers ``SQLITE_CORRUPT`` ("database disk image is malformed") or
``SQLITE_NOTADB`` when it meets one. The store checks the file when it opens
(``PRAGMA integrity_check``) and raises :class:`~edge.outbox.store.StoreDamaged`; the outbox
service then calls :func:`salvage` and opens the file it writes. The hub starts, its other
services never wait on a technician, and the registers keep trading.

What :func:`salvage` does, in order:

1. copies every row it can read (items, their audit trail, meta) from the damaged file and its
   WAL (commits not yet checkpointed into the main file) into ``<name>.salvage``, a new file
   with the store's schema. Rows are read in rowid order in batches; where a batch fails, row
   by row until the damage is behind. An item whose payload no longer matches its sha256
   digest is damaged too and is not kept (the cloud must not get it); one whose key, kind,
   event type, lane or dependencies no longer read as its payload says has them restored
   from the payload (audited ``repair`` by ``hub``);
2. keeps the sequence going past the highest seq the damaged file held, so no new sale takes
   the seq of a lost one, and records what it did in ``meta`` (``salvage``: JSON), in the
   same commit as the rows: a new file with that row is complete;
3. fsyncs it, moves the damaged file aside with its ``-wal`` and ``-shm`` as
   ``<name>.damaged-<UTC time>`` (kept for whoever wants to look, never written again), and
   renames the new file into place.

If the hub dies in the middle, :func:`finish_interrupted` (run before every open) completes
step 3 for a complete new file, or deletes a partial one so that the salvage starts again.

Lost items are reported as seq ranges, and the hub asks the registers to re-send their journals
from just before the first loss (a retained request, docs/protocol.md): ``txn.submit`` is
idempotent, so what the hub kept answers ``duplicate`` with its original seq and only what was
lost is accepted anew (docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from edge.bus.envelope import JournalResend
from edge.outbox.transactions import filed, read_filing

log = logging.getLogger(__name__)

BATCH = 256
CLEAN_RUN = 64
"""Rows read one by one without an error before batches resume."""
RESEND_MARGIN_S = 600.0
"""Taken off the re-send time asked of the registers: their clocks and the hub's differ."""
BLIND_PROBE = 100_000
"""How far past the last readable rowid the row-by-row walk goes when the file no longer says
its highest rowid (neither ``max(rowid)`` nor ``sqlite_sequence`` can be read)."""

_ITEM_COLUMNS = (
    "seq, key, kind, event_type, lane, depends_on, payload, digest, flags, accepted_at, status, "
    "attempts, next_attempt_at, last_error, record_id, delivered_at, parked_at, error_detail"
)
_AUDIT_COLUMNS = "id, at, key, action, actor, reason"


class SalvageReport(msgspec.Struct, frozen=True):
    """What :func:`salvage` kept and lost; stored as JSON in the new file's ``meta``."""

    at: float
    damaged_file: str
    items_kept: int
    pending_kept: int
    lost_seqs: list[tuple[int, int]]
    """Inclusive seq ranges that could not be read, or whose payload failed its digest (a range
    may include seqs of deliveries already pruned: the damaged file cannot tell)."""
    lost_from: int | None
    """Past this seq nothing could be read and the file no longer says how far it went (its
    highest seq is unreadable too): the loss there has no known extent."""
    audit_kept: int
    audit_lost: int
    resend_since: float | None = None
    """When something was lost: the registers are asked to re-send their journals from this
    time on (the last kept item before the first loss, less :data:`RESEND_MARGIN_S` for the
    registers' clocks); None with a loss means the whole journal."""
    items_refiled: int = 0
    """Items kept whose key, kind, event type, lane or dependencies were restored from their
    payload (a bit flipped in one: :func:`refiled`), each audited."""

    @property
    def needs_resend(self) -> bool:
        return bool(self.lost_seqs) or self.lost_from is not None

    @property
    def items_lost(self) -> int:
        """Known losses (see ``lost_from``)."""
        return sum(last - first + 1 for first, last in self.lost_seqs)

    def summary(self) -> str:
        unreadable = (
            f"{self.items_lost} unreadable (seq {_ranges_text(self.lost_seqs)})"
            if self.lost_seqs
            else "none unreadable"
        )
        if self.lost_from is not None:
            unreadable += f", nothing readable from seq {self.lost_from} on"
        if self.needs_resend:
            since = (
                "their whole journals"
                if self.resend_since is None
                else f"their journals from {_utc(self.resend_since)}"
            )
            unreadable += f"; the registers are asked to re-send {since}"
        refiled = (
            f", {self.items_refiled} of them refiled from their payloads"
            if self.items_refiled
            else ""
        )
        return (
            f"salvaged from a damaged file at {_utc(self.at)}: {self.items_kept} items kept "
            f"({self.pending_kept} pending{refiled}), {unreadable}; the damaged file is "
            f"{self.damaged_file}"
        )

    def resend_request(self) -> JournalResend:
        """The retained message on ``store/{store}/hub/journal/resend`` (docs/protocol.md)."""
        return journal_request(f"salvage-{self.at:.0f}", self.resend_since, "outbox salvaged")

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str) -> SalvageReport:
        return msgspec.json.decode(text, type=cls)


def journal_request(request_id: str, since: float | None, reason: str) -> JournalResend:
    """A request for the registers' journals from ``since`` (epoch seconds; None: all)."""
    when = None if since is None else dt.datetime.fromtimestamp(since, dt.UTC).isoformat()
    return JournalResend(id=request_id, since=when, reason=reason)


def merged(requests: list[JournalResend]) -> JournalResend:
    """One request covering several: the earliest ``since`` (null, the whole journal, first)."""
    starts = [r.since for r in requests if r.since is not None]
    since = min(starts, key=dt.datetime.fromisoformat) if len(starts) == len(requests) else None
    return JournalResend(id="+".join(r.id for r in requests), since=since,
                         reason="; ".join(r.reason for r in requests))  # fmt: skip


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def is_damage(exc: BaseException) -> bool:
    """True for SQLite's "the file is damaged" errors (not for locks, full disks, I/O)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def salvage(
    path: Path, schema: str, *, now: float, max_page_count: int | None = None
) -> SalvageReport:
    """Replace the damaged outbox file at ``path`` by what can be read of it (module docstring).
    ``schema``: the store's DDL, run on the new file; ``max_page_count``: the store's own cap,
    which the new file keeps to as well."""
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    fresh = _fresh(path)
    for suffix in ("", "-journal"):
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)  # an earlier salvage cut short
    damaged = sqlite3.connect(path, isolation_level=None)
    out = sqlite3.connect(fresh, isolation_level=None)
    try:
        if max_page_count is not None:
            out.execute(f"PRAGMA max_page_count = {int(max_page_count)}")
        out.executescript(schema)
        out.execute("BEGIN")
        items_loss, audit_loss = _Loss(), _Loss()
        refiled_keys: list[tuple[str, str]] = []
        items, last_seq = _copy(damaged, out, "items", _ITEM_COLUMNS, items_loss,
                                lambda row: _mended(row, refiled_keys))  # fmt: skip
        audit_kept, _ = _copy(damaged, out, "audit", _AUDIT_COLUMNS, audit_loss)
        top_seq = max([_top_rowid(damaged, "items") or 0, last_seq, *items_loss.rowids])
        for name, value in _meta(damaged):
            out.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))
        _requeue_unknown_status(out, now)
        for key, names in refiled_keys:
            out.execute(
                "INSERT INTO audit (at, key, action, actor, reason) VALUES (?, ?, ?, ?, ?)",
                (now, key, "repair", "hub", f"salvage: {names} restored from the payload"),
            )
        pending = out.execute("SELECT count(*) FROM items WHERE status = 'pending'").fetchone()[0]
        # New sales continue after every seq the damaged file held, lost ones included.
        out.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'items'", (top_seq,))
        out.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'items', ?"
            " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'items')",
            (top_seq,),
        )
        lost = [*items_loss.rowids, *([] if items_loss.beyond is None else [items_loss.beyond])]
        resend_since = None
        if lost:
            (before,) = out.execute(
                "SELECT max(accepted_at) FROM items WHERE seq < ?", (min(lost),)
            ).fetchone()
            resend_since = None if before is None else before - RESEND_MARGIN_S
        report = SalvageReport(
            at=now,
            damaged_file=str(aside),
            items_kept=items,
            pending_kept=pending,
            lost_seqs=_ranges(items_loss.rowids),
            lost_from=items_loss.beyond,
            audit_kept=audit_kept,
            audit_lost=len(audit_loss.rowids) + (audit_loss.beyond is not None),
            resend_since=resend_since,
            items_refiled=len(refiled_keys),
        )
        # Written last, in the same commit: its presence says the new file is complete.
        out.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('salvage', ?)", (report.to_json(),)
        )
        out.execute("COMMIT")
    finally:
        damaged.close()
        out.close()
    _fsync(fresh)
    _fsync(path.parent)
    _swap(path, report)
    log.error("outbox: %s", report.summary())
    return report


def finish_interrupted(path: Path) -> SalvageReport | None:
    """Before opening ``path``: complete a salvage the process died in the middle of. A whole
    new file is swapped in (the damaged one may be half moved aside); a partial one is
    deleted (the damaged file is still in place, and is salvaged again)."""
    fresh = _fresh(path)
    if not fresh.exists():
        return None
    report = None
    db = sqlite3.connect(fresh, isolation_level=None)
    try:
        row = db.execute("SELECT value FROM meta WHERE name = 'salvage'").fetchone()
        report = SalvageReport.from_json(row[0]) if row is not None else None
    except sqlite3.DatabaseError:
        pass
    finally:
        db.close()
    if report is None:
        for suffix in ("", "-journal"):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        return None
    _swap(path, report)
    log.error("outbox: finished an interrupted salvage: %s", report.summary())
    return report


def _fresh(path: Path) -> Path:
    return path.with_name(f"{path.name}.salvage")


def _swap(path: Path, report: SalvageReport) -> None:
    """Move the damaged file aside, its WAL first (left next to the new file, SQLite would
    replay its frames into it), then the new file into place. Each rename is idempotent."""
    for suffix in ("-wal", "-shm", ""):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{report.damaged_file}{suffix}")
    _fsync(path.parent)
    _fresh(path).rename(path)
    _fsync(path.parent)


@dataclass
class _Loss:
    rowids: list[int] = field(default_factory=list)
    """Rowids that exist (below the table's highest) but could not be read."""
    beyond: int | None = None
    """The first rowid of an unreadable stretch whose end the file no longer says."""


class _Keyed(msgspec.Struct):
    txn_id: str | None = None


_keyed = msgspec.json.Decoder(_Keyed)

FILED_COLUMNS = "key, kind, event_type, lane, depends_on"
"""An item's columns that its payload determines (edge.outbox.transactions.filed)."""


def payload_intact(payload: bytes, digest: object) -> bool:
    """The payload still matches the sha256 digest taken when it was accepted."""
    return hashlib.sha256(payload).digest() == digest


def refiled(payload: bytes, stored: tuple[object, ...]) -> tuple[object, ...]:
    """What an item's ``FILED_COLUMNS`` should read, from its intact payload; ``stored``:
    what they read. A bit flipped in one of them (no check of the file sees one in a column
    no index holds) is undone: the key would send the sale under another id, the kind or the
    lane would label it wrongly in the cloud, its dependencies would order it wrongly or, no
    longer JSON, stall the sender's plan. A transaction gives all five; another JSON object
    with a ``txn_id`` gives the key; anything else says nothing against ``stored``."""
    try:
        return filed(read_filing(payload)).columns()
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        txn_id = _keyed.decode(payload).txn_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return stored
    return stored if txn_id is None else (txn_id, *stored[1:])


def refiled_names(stored: tuple[object, ...], should: tuple[object, ...]) -> str:
    """The names of the ``FILED_COLUMNS`` that differ, e.g. ``lane, depends_on``."""
    names = FILED_COLUMNS.split(", ")
    return ", ".join(n for n, a, b in zip(names, stored, should, strict=True) if a != b)


def _mended(
    row: tuple[object, ...], refiled_keys: list[tuple[str, str]]
) -> tuple[object, ...] | None:
    """An item row (``_ITEM_COLUMNS``) as it is to be kept: None when its payload fails its
    digest (damaged: the cloud must not get it); its ``FILED_COLUMNS`` restored from the
    payload when a bit flipped in one (:func:`refiled`; noted in ``refiled_keys``)."""
    payload, digest = row[6], row[7]
    if not isinstance(payload, bytes) or not payload_intact(payload, digest):
        return None
    stored = row[1:6]
    should = refiled(payload, stored)
    if should == stored:
        return row
    refiled_keys.append((str(should[0]), refiled_names(stored, should)))
    return (row[0], *should, *row[6:])


def _requeue_unknown_status(out: sqlite3.Connection, now: float) -> None:
    """An item whose status no longer reads as one (a bit flipped in it: ``pendinf``) would
    be in no queue and counted nowhere: it is pending again, audited. Sending it once more is
    safe: both connectors post idempotently (by event id, by external id)."""
    keys = [key for (key,) in out.execute(
        "SELECT key FROM items WHERE status NOT IN ('pending', 'delivered', 'parked')"
    )]  # fmt: skip
    for key in keys:
        out.execute(
            "UPDATE items SET status = 'pending', next_attempt_at = ? WHERE key = ?", (now, key)
        )
        out.execute(
            "INSERT INTO audit (at, key, action, actor, reason) VALUES (?, ?, ?, ?, ?)",
            (now, key, "retry", "hub", "salvage: its status was unreadable; sent again"),
        )
    if keys:
        log.warning("outbox: salvage: %d item(s) with an unreadable status are pending again",
                    len(keys))  # fmt: skip


def _copy(
    damaged: sqlite3.Connection,
    out: sqlite3.Connection,
    table: str,
    columns: str,
    loss: _Loss,
    mend: Callable[[tuple[object, ...]], tuple[object, ...] | None] = lambda row: row,
) -> tuple[int, int]:
    """Rows readable -> ``out``, as ``mend`` returns them (None: damaged, the row goes to
    ``loss``); returns (kept, highest rowid seen)."""
    placeholders = ", ".join("?" * len(columns.split(", ")))
    kept = last = 0
    for rowid, row in _readable(damaged, table, columns, loss):
        last = max(last, rowid)
        kept_row = mend(row)
        if kept_row is None:
            loss.rowids.append(rowid)
            continue
        out.execute(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({placeholders})", kept_row)
        kept += 1
    return kept, last


def _meta(damaged: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = _readable(damaged, "meta", "name, value", _Loss())
    return [(str(name), str(value)) for _, (name, value) in rows if name != "schema_version"]


def _readable(
    db: sqlite3.Connection, table: str, columns: str, loss: _Loss
) -> Iterator[tuple[int, tuple[object, ...]]]:
    """(rowid, row) for every row of ``table`` SQLite can read, in rowid order; what it cannot
    read goes to ``loss``."""
    top = _top_rowid(db, table)
    after = 0
    while True:
        try:
            batch = db.execute(
                f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, BATCH),
            ).fetchall()
        except sqlite3.DatabaseError:
            batch = None
        if batch == []:
            return
        if batch is not None:
            for row in batch:
                yield row[0], tuple(row[1:])
            after = batch[-1][0]
            continue
        # Step through the damage one rowid at a time (rowids of pruned rows read as absent).
        if top is not None and top <= after:
            return
        limit = top if top is not None else after + BLIND_PROBE
        clean, failed = 0, []
        while clean < CLEAN_RUN and after < limit:
            after += 1
            try:
                found = db.execute(
                    f"SELECT rowid, {columns} FROM {table} WHERE rowid = ?", (after,)
                ).fetchone()
            except sqlite3.DatabaseError:
                failed.append(after)
                clean = 0
                continue
            clean += 1
            if found is not None:
                yield found[0], tuple(found[1:])
        if top is None and failed and failed[-1] == after:
            # Blind, and failing to the end: how far the table went is unknown.
            loss.beyond = _stretch_start(failed)
            failed = [rowid for rowid in failed if rowid < loss.beyond]
        loss.rowids.extend(failed)
        if after >= limit:
            return


def _stretch_start(failed: list[int]) -> int:
    """The first rowid of the unbroken run of failures that ends ``failed``."""
    failures, start = set(failed), failed[-1]
    while start - 1 in failures:
        start -= 1
    return start


def _top_rowid(db: sqlite3.Connection, table: str) -> int | None:
    for sql in (
        f"SELECT max(rowid) FROM {table}",
        "SELECT seq FROM sqlite_sequence WHERE name = ?",
    ):
        try:
            row = db.execute(sql, (table,) if "?" in sql else ()).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None and row[0] is not None:
            return int(row[0])
    return None


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return ranges


def _ranges_text(ranges: list[tuple[int, int]], shown: int = 5) -> str:
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:shown]]
    if len(ranges) > shown:
        parts.append(f"and {len(ranges) - shown} more ranges")
    return ", ".join(parts)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
