"""The durable outbox: SQLite (WAL, synchronous=FULL) in its own file, group commit.

Theory of operation
-------------------
*Append* (the intake path, latency-critical). Callers ``await store.append(entry)``; entries
queue (a ``queue.SimpleQueue``) for the store's own writer thread, which runs every write of
this process in the order asked. The writer takes the appends queued (up to ``max_group``, at
most :data:`MAX_GROUP`) and commits them in ONE transaction:

1. one multi-row ``INSERT ... ON CONFLICT(key) DO NOTHING RETURNING``, autocommitted: SQLite
   runs it in its own transaction and commits before the statement returns its last row,
   with ``synchronous=FULL`` the WAL is fsynced by then;
2. for each entry not inserted, find the row already holding its key (a re-sent
   transaction): same content digest -> the original sequence number (a duplicate, not a
   second row); different content -> :class:`KeyConflict` for that entry only. A row whose
   payload no longer matches its digest (damaged on disk, see *Payload damage*) is repaired
   from the re-send;
3. only then resolve every caller's future, with one ``call_soon_threadsafe`` for the group.
   An ack sent by the intake therefore always means "on disk".

While one group is being fsynced the next one fills up, so throughput grows with the number of
concurrent lanes (group commit) while a lone lane pays one fsync. The writer starts the next
group as soon as a commit returns, while the event loop answers the last one's callers (a
thread pool behind an asyncio task idled between commits until the busy loop came round to
it).

If the commit fails (disk full, I/O error) the whole group is rolled back and every caller gets
the error: nothing is half written. SQLITE_FULL becomes :class:`StorageFull` (retryable).

*Delivery bookkeeping* (the sender): ``due`` reads pending items in sequence order,
``mark_delivered`` / ``mark_retry`` / ``mark_parked`` record outcomes; operators ``retry``
and ``park`` items with an audit row (who, why, when). All writes go through the same writer
thread, so SQLite never sees two writers from this process.

*Payload damage.* A bit that flips inside a payload on a worn disk leaves the page
structurally valid: SQLite and ``PRAGMA integrity_check`` see nothing. ``payloads`` checks
each payload against the sha256 taken at acceptance and answers None for one that no longer
matches, so the sender never posts it: it parks it as :data:`PAYLOAD_DAMAGED` (actor
``hub``), and :meth:`OutboxStore.payload_damage` tells the service to ask the registers for
their journals. The register's re-send (same content, so the same digest) repairs the row in
the append path and puts a parked item back in the queue, audited ``repair``. A bit flipped
in a key instead would send the sale under another id: ``PRAGMA integrity_check`` at open
sees the row missing from the key's index, and ``payloads`` raises :class:`StoreDamaged` for
it while running; the salvage restores the key from the payload. The other columns the payload
determines (kind, event type, lane, dependencies: edge.outbox.transactions.filed) are in no
index: ``payloads`` restores one that reads otherwise on the writer, audited, and leaves that
item out of the batch for the sender to plan again.

*Reads* for status and listings use a second connection on its own thread (WAL lets it read
while the writer commits); the once-a-second counts (:meth:`OutboxStore.stats`) a third, so
that the sender's reads never wait behind them.

Errors::

    OutboxError                   base; ``retryable`` says whether trying again can help
    ├── StorageFull               the disk (or the configured floor) is full; retryable
    ├── KeyConflict               same key, different content; not retryable
    ├── UnknownItem               an operator named an item that does not exist
    ├── WrongState                ... that is not in a state the operator's action applies to
    ├── StoreClosed               the store is closing/closed; retryable (after restart)
    └── StoreDamaged              the file is damaged (open): salvage it (edge.outbox.salvage)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge.files import is_disk_full
from edge.outbox.salvage import (
    FILED_COLUMNS,
    SalvageReport,
    is_damage,
    payload_intact,
    refiled,
    refiled_names,
    salvage,
)
from edge.outbox.transactions import (
    Transaction,
    encode_transaction,
    filed,
    keys_from_json,
    keys_json,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

Status = Literal["pending", "delivered", "parked"]

PAYLOAD_DAMAGED = "PAYLOAD_DAMAGED"
"""The code of an item parked by the hub because its payload no longer matches its digest."""

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    lane            TEXT    NOT NULL,
    depends_on      TEXT    NOT NULL,           -- JSON array of keys
    payload         BLOB    NOT NULL,           -- canonical JSON of the transaction
    digest          BLOB    NOT NULL,           -- sha256(payload)
    flags           TEXT,                       -- JSON array of review flags, or NULL
    accepted_at     REAL    NOT NULL,           -- wall clock, epoch seconds
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL DEFAULT 0, -- wall clock, epoch seconds
    last_error      TEXT,
    record_id       TEXT,
    delivered_at    REAL,
    parked_at       REAL,
    error_detail    TEXT                        -- JSON: the cloud's whole error
);
CREATE INDEX IF NOT EXISTS items_due ON items (next_attempt_at, seq) WHERE status = 'pending';
-- due() walks pending items in seq order and stops at its LIMIT: without this index SQLite
-- sorted every due row (a 100,000-item backlog) on each planning round.
CREATE INDEX IF NOT EXISTS items_pending_seq ON items (seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS items_parked ON items (seq) WHERE status = 'parked';
CREATE INDEX IF NOT EXISTS items_delivered ON items (delivered_at) WHERE status = 'delivered';
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    key     TEXT NOT NULL,
    action  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    reason  TEXT NOT NULL
);
"""


class OutboxError(Exception):
    retryable = False


class StorageFull(OutboxError):
    retryable = True


class KeyConflict(OutboxError):
    def __init__(self, key: str) -> None:
        super().__init__(f"{key!r} was already accepted with different content")
        self.key = key


class UnknownItem(OutboxError):
    """No item has this txn id, nor (for a number) this seq."""


class WrongState(OutboxError):
    """The item is not in a state the operator's action applies to."""


class StoreClosed(OutboxError):
    retryable = True


class StoreDamaged(OutboxError):
    """SQLite found the outbox file damaged (SQLITE_CORRUPT, SQLITE_NOTADB or a failed
    ``integrity_check``), or a row's key is no longer its payload's txn_id: at open,
    :meth:`OutboxStore.salvage` replaces it by what can be read of it; while running, the hub
    stops so that its restart does (``OutboxStore.damage``). Retryable: a register re-sends
    once the hub is back."""

    retryable = True


@dataclass(frozen=True, slots=True)
class Entry:
    """What the intake appends: one validated transaction."""

    key: str
    kind: str
    event_type: str
    lane: str
    payload: bytes
    depends_on: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()

    @classmethod
    def of(cls, txn: Transaction, flags: tuple[str, ...] = ()) -> Entry:
        """A validated transaction as the intake files it (:func:`filed`), its canonical
        JSON as the payload."""
        key, kind, event_type, lane, depends_on = filed(txn)
        return cls(key, kind, event_type, lane, encode_transaction(txn), depends_on, flags)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.payload).digest()


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    duplicate: bool
    """True: the key was already in the outbox with the same content (a re-sent transaction);
    ``seq`` is the original one."""
    accepted_at: float
    repaired: bool = False
    """True: the stored copy was damaged on disk, and this re-send replaced it (a parked
    item is pending again)."""


@dataclass(frozen=True, slots=True)
class PayloadDamage:
    """Items parked because their payload no longer matches its digest (:meth:`OutboxStore.
    payload_damage`)."""

    items: int
    first_seq: int
    first_accepted_at: float


@dataclass(frozen=True, slots=True)
class Item:
    """A row, as the sender and the operator surface see it."""

    seq: int
    key: str
    kind: str
    event_type: str
    lane: str
    depends_on: tuple[str, ...]
    payload: bytes
    accepted_at: float
    status: Status
    attempts: int
    next_attempt_at: float
    last_error: str | None
    record_id: str | None = None
    delivered_at: float | None = None
    parked_at: float | None = None
    error_detail: Any = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stats:
    pending: int
    parked: int
    delivered: int
    oldest_pending_at: float | None
    db_bytes: int


# Most entries in one group: a group is one INSERT of 10 parameters per entry, and SQLite
# (since 3.32) binds at most 32,766 parameters per statement.
MAX_GROUP = 3200


@dataclass(slots=True)
class _Append:
    entry: Entry
    now: float
    future: asyncio.Future[Appended] = field(repr=False)


@dataclass(slots=True)
class _Job:
    """Any other write, run alone on the writer thread."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any] = field(repr=False)


class _Close:
    """Queued by close(): the writer thread finishes what is before it and stops."""


_CLOSE = _Close()


def _run_job(
    job: _Job, connection: Callable[[], sqlite3.Connection]
) -> tuple[Any, BaseException | None]:
    try:  # the connection too: a file SQLite cannot open fails the job, not the thread
        return job.fn(connection()), None
    except Exception as exc:
        return None, exc


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the event loop: a writer-thread result to its caller (unless it gave up)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_ITEM_COLUMNS = (
    "seq, key, kind, event_type, lane, depends_on, payload, accepted_at, status, attempts, "
    "next_attempt_at, last_error, record_id, delivered_at, parked_at, error_detail, flags"
)


def _json_detail(text: str | None) -> Any:
    """The cloud's whole error as stored; a text that no longer parses (a bit flipped on disk)
    is shown as it reads rather than failing every listing of the item."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"unreadable": text}


def _item(row: sqlite3.Row) -> Item:
    """A row selected as ``_ITEM_COLUMNS`` (in that order). Unpacked by position: by name it
    cost 40 % more, and the sender builds these at every plan."""
    (seq, key, kind, event_type, lane, depends_on, payload, accepted_at, status, attempts,
     next_attempt_at, last_error, record_id, delivered_at, parked_at, error_detail,
     flags) = row  # fmt: skip
    return Item(
        seq, key, kind, event_type, lane, keys_from_json(depends_on), bytes(payload),
        accepted_at, status, attempts, next_attempt_at, last_error, record_id, delivered_at,
        parked_at, _json_detail(error_detail), keys_from_json(flags),
    )  # fmt: skip


def _find(db: sqlite3.Connection, ref: str) -> Item | None:
    """See :meth:`OutboxStore.find` (a txn id may be all digits: the txn id wins)."""
    seq = int(ref) if ref.isascii() and ref.isdigit() and len(ref) <= 18 else None
    rows = db.execute(
        f"SELECT {_ITEM_COLUMNS} FROM items WHERE key = ? OR seq = ? LIMIT 2", (ref, seq)
    ).fetchall()
    for row in rows:
        if row["key"] == ref:
            return _item(row)
    return _item(rows[0]) if rows else None


@dataclass(frozen=True)
class UncleanStop:
    """The last run of the hub ended without closing its store. A disk that lies about fsync,
    or a bad sector in the WAL's tail, loses the last commits without SQLite noticing: the
    hub cannot tell, so it asks the registers for their journals from the last sale it holds
    (edge.outbox.service)."""

    last_accepted_at: float


def _mark_running(db: sqlite3.Connection) -> UncleanStop | None:
    """On the writer: what the last run left (see :class:`UncleanStop`), then this run's mark."""
    unclean = db.execute("SELECT 1 FROM meta WHERE name = 'running'").fetchone() is not None
    (last,) = db.execute("SELECT max(accepted_at) FROM items").fetchone()
    try:
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('running', '1')")
    except sqlite3.OperationalError as exc:
        if not is_disk_full(exc):
            raise
        # The hub starts all the same (sales are refused STORAGE_FULL until space returns).
        # A mark left by the run before stays; without one, an unclean end of this run goes
        # unseen by the next start.
        log.warning("outbox: the disk is full: this run is not marked as running (%s)", exc)
    return UncleanStop(last) if unclean and last is not None else None


def _salvage_report(db: sqlite3.Connection) -> SalvageReport | None:
    row = db.execute("SELECT value FROM meta WHERE name = 'salvage'").fetchone()
    return None if row is None else SalvageReport.from_json(row["value"])


def _rollback(db: sqlite3.Connection) -> None:
    # On SQLITE_FULL and some I/O errors SQLite has already rolled the transaction back; a
    # second ROLLBACK would fail and hide the real error.
    if db.in_transaction:
        db.execute("ROLLBACK")


class OutboxStore:
    """The outbox file. Open with :meth:`open`, close with :meth:`close`.

    Calling contract: all methods are coroutines for the event loop; the SQLite work runs on the
    store's own threads (one writer, one reader), never on the loop.
    """

    def __init__(
        self, path: Path, *, max_group: int = 512, max_page_count: int | None = None
    ) -> None:
        self.path = path
        self._max_group = min(max_group, MAX_GROUP)
        self._max_page_count = max_page_count
        # Every write runs on ONE thread of the store's own (see _writer_main), fed by this queue.
        self._jobs: queue.SimpleQueue[_Append | _Job | _Close] = queue.SimpleQueue()
        self._accepting = False  # from open() until close(): reads and writes are taken
        self._writer: threading.Thread | None = None
        self._writer_done: asyncio.Future[None] | None = None
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="outbox-reader")
        # Counting a 100,000-item outbox takes a while: on its own connection, so the sender's
        # reads (on the reader) never queue behind the once-a-second figures.
        self._stats_pool = ThreadPoolExecutor(1, thread_name_prefix="outbox-stats")
        self._local = threading.local()
        self._closed = True
        self._mark_running = False
        self.unclean_stop: UncleanStop | None = None
        """Set by an ``open(mark_running=True)`` that found the last run ended without a
        :meth:`close` (a crash, a power cut), and the file not empty."""
        self.damage: StoreDamaged | None = None
        """Set when a read or write meets damage while the store is open."""
        self.salvage_report: SalvageReport | None = None
        """The last salvage of this file (from its meta), if it ever needed one."""
        self.groups_committed = 0
        self.entries_committed = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self, *, mark_running: bool = False) -> None:
        """Open (and check) the file. ``mark_running``: the hub's own store, which records
        that it runs until :meth:`close`, so that the next open knows whether this run ended
        cleanly (:attr:`unclean_stop`); tools opening the file beside the hub leave it be."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.damage = None  # a failed open's damage is the salvage's business, not the hub's
        self._mark_running = mark_running
        loop = asyncio.get_running_loop()
        self._writer_done = done = loop.create_future()
        self._accepting = True
        self._writer = threading.Thread(
            target=self._writer_main, args=(loop, done), name="outbox-writer", daemon=True
        )
        self._writer.start()
        try:
            await self._on_writer(self._init_schema)
            if mark_running:
                self.unclean_stop = await self._on_writer(_mark_running)
            self.salvage_report = await self._on_reader(_salvage_report)
        except BaseException:  # damage is StoreDamaged already (the writer and the pools say so)
            await self._stop_writer()
            await self._close_readers()
            raise
        self._closed = False

    async def salvage(self, *, now: float) -> SalvageReport:
        """Replace the damaged file by what can be read of it (:mod:`edge.outbox.salvage`); on
        a store that is not open. Then :meth:`open` it."""
        assert self._closed, "salvage a closed store"
        return await asyncio.to_thread(
            salvage, self.path, _SCHEMA, now=now, max_page_count=self._max_page_count
        )

    async def close(self) -> None:
        """Finish appends and writes already queued, then close the connections."""
        if self._closed:
            return
        self._closed = True
        # Appends queued before the close are still written: their callers wait for an ack.
        if self._mark_running and self._accepting:
            with contextlib.suppress(OutboxError, sqlite3.Error):
                await self._write(lambda db: db.execute("DELETE FROM meta WHERE name = 'running'"))
        await self._stop_writer()
        log.info(
            "outbox: closed; %d appends committed in %d groups",
            self.entries_committed,
            self.groups_committed,
        )
        await self._close_readers()
        for pool in (self._reader_pool, self._stats_pool):
            pool.shutdown(wait=True)

    async def _close_readers(self) -> None:
        for pool in (self._reader_pool, self._stats_pool):
            await asyncio.get_running_loop().run_in_executor(pool, self._close_local)

    async def _stop_writer(self) -> None:
        if self._accepting:
            self._accepting = False
            self._jobs.put(_CLOSE)
        if self._writer_done is not None:
            await self._writer_done
        if self._writer is not None:
            self._writer.join()  # it has settled its last future: only its return is left

    @property
    def is_open(self) -> bool:
        return not self._closed

    # -- append (group commit) ----------------------------------------------------------------

    async def append(self, entry: Entry, *, now: float) -> Appended:
        """Durably append ``entry`` (or find it); returns once it is committed to disk.

        Raises :class:`KeyConflict`, :class:`StorageFull`, :class:`StoreClosed`. A caller
        cancelled while its entry is queued or being committed gives up only its answer: the
        writer thread commits the group whatever becomes of its callers' futures.
        """
        self._check_accepting()
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._jobs.put(_Append(entry, now, future))
        return await future

    def _writer_main(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
        """The writer thread: every write of this process, in the order it was asked for.

        Appends queued together become one group (one commit). The thread starts the next
        group as soon as a commit returns, while the event loop answers the last one's
        callers: one ``call_soon_threadsafe`` per group, no loop round trip between commits.
        """
        jobs = self._jobs
        held: _Append | _Job | _Close | None = None
        try:
            while True:
                job = held if held is not None else jobs.get()
                held = None
                if job is _CLOSE:
                    return
                if isinstance(job, _Job):
                    result, error = _run_job(job, self._db)
                    if isinstance(error, sqlite3.DatabaseError) and is_damage(error):
                        error = self._damaged(error)
                    loop.call_soon_threadsafe(_settle, job.future, result, error)
                    continue
                assert isinstance(job, _Append)
                group = [job]
                while len(group) < self._max_group:
                    try:
                        queued = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(queued, _Append):
                        held = queued  # a write or the close: after this group, in order
                        break
                    group.append(queued)
                loop.call_soon_threadsafe(self._settle_group, group, self._commit_group(group))
        finally:
            self._close_local()
            loop.call_soon_threadsafe(_settle, done, None, None)

    def _commit_group(self, group: Sequence[_Append]) -> list[Appended | Exception] | Exception:
        """On the writer thread: the group's results, or the error that rolled it all back."""
        try:
            return self._write_group([(a.entry, a.now) for a in group])
        except sqlite3.Error as exc:
            log.error("outbox: group of %d rolled back: %s", len(group), exc)
            if is_damage(exc):
                return self._damaged(exc)
            if is_disk_full(exc):
                return StorageFull(f"outbox storage full: {exc}")
            return OutboxError(f"outbox write failed: {exc}")
        except Exception as exc:  # the whole group failed and was rolled back
            return exc

    def _settle_group(
        self, group: Sequence[_Append], outcome: list[Appended | Exception] | Exception
    ) -> None:
        """On the event loop: answer the group's callers."""
        if isinstance(outcome, Exception):
            for pending in group:
                _settle(pending.future, None, outcome)
            return
        self.groups_committed += 1
        self.entries_committed += len(group)
        for pending, result in zip(group, outcome, strict=True):
            if isinstance(result, Exception):
                _settle(pending.future, None, result)
            else:
                _settle(pending.future, result, None)

    def _write_group(self, group: Sequence[tuple[Entry, float]]) -> list[Appended | Exception]:
        """Steps 1-3 for one group, as ONE autocommitted statement: SQLite runs the insert and
        commits (fsync) in the statement's own transaction, so the writer hands the GIL back
        and forth with the busy event loop twice per group, not once per BEGIN, insert and
        COMMIT. A failed commit rolls the whole statement back. Re-sent keys are looked up
        after it (only this thread writes, so what they find cannot change meanwhile)."""
        db = self._db()
        rows = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(group))
        values = [
            value
            for entry, now in group
            for value in (
                entry.key,
                entry.kind,
                entry.event_type,
                entry.lane,
                keys_json(entry.depends_on),
                entry.payload,
                entry.digest,
                keys_json(entry.flags) if entry.flags else None,
                now,
                now,
            )
        ]
        cursor = db.execute(
            "INSERT INTO items (key, kind, event_type, lane, depends_on, payload, digest,"
            f" flags, accepted_at, next_attempt_at) VALUES {rows}"
            " ON CONFLICT(key) DO NOTHING RETURNING key, seq",
            values,
        )
        inserted: dict[str, int] = dict(cursor.fetchall())
        results: list[Appended | Exception] = []
        for entry, now in group:
            seq = inserted.pop(entry.key, None)  # pop: a key twice in one group is a resend
            if seq is not None:
                results.append(Appended(seq, False, now))
                continue
            row = db.execute(
                "SELECT seq, digest, payload, accepted_at, status, last_error FROM items"
                " WHERE key = ?",
                (entry.key,),
            ).fetchone()
            digest, actual = bytes(row["digest"]), hashlib.sha256(row["payload"]).digest()
            if digest == actual:  # intact: the same content is a duplicate, other a conflict
                same = digest == entry.digest
                results.append(Appended(row["seq"], True, row["accepted_at"]) if same else
                               KeyConflict(entry.key))  # fmt: skip
            elif entry.digest in (digest, actual):  # a damaged payload, or a damaged digest
                self._repair(db, row, entry, now)
                results.append(Appended(row["seq"], True, row["accepted_at"], repaired=True))
            else:
                results.append(KeyConflict(entry.key))
        return results

    def _repair(self, db: sqlite3.Connection, row: sqlite3.Row, entry: Entry, now: float) -> None:
        """On the writer: a re-send replaces a row damaged on disk (its own transaction: the
        group's INSERT has committed already), and a parked item is due again."""
        parked_for_damage = row["status"] == "parked" and (row["last_error"] or "").startswith(
            f"{PAYLOAD_DAMAGED}:"
        )
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "UPDATE items SET payload = ?, digest = ? WHERE seq = ?",
                (entry.payload, entry.digest, row["seq"]),
            )
            if parked_for_damage:
                db.execute(
                    "UPDATE items SET status = 'pending', next_attempt_at = ?, parked_at = NULL"
                    " WHERE seq = ?",
                    (now, row["seq"]),
                )
            self._audit(
                db, now, entry.key, "repair", f"lane {entry.lane}",
                "re-sent by the register; the stored copy no longer matched its digest",
            )  # fmt: skip
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        log.warning(
            "outbox: %s (seq %d) repaired from the register's re-send", entry.key, row["seq"]
        )

    # -- sender bookkeeping -------------------------------------------------------------------

    async def due(self, now: float, limit: int, *, excluding: Collection[str] = ()) -> list[Item]:
        """Pending items whose next attempt is due, in sequence order, WITHOUT their payload
        (``payload`` is empty: the sender plans on metadata and fetches the payloads of what
        it actually sends with :meth:`payloads`). ``excluding``: keys to leave out (those in
        flight): the sender plans every time a batch ends, so it must not read them again."""
        columns = _ITEM_COLUMNS.replace("payload,", "x'' AS payload,")

        def query(db: sqlite3.Connection) -> list[Item]:
            rows = db.execute(
                f"SELECT {columns} FROM items INDEXED BY items_pending_seq"
                " WHERE status = 'pending' AND next_attempt_at <= ?"
                " AND key NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?",
                (now, json.dumps(list(excluding)), limit),
            )
            return [_item(r) for r in rows]

        return await self._on_reader(query)

    async def payloads(self, seqs: Sequence[int], *, now: float) -> dict[int, bytes | None]:
        """The payloads of ``seqs``, checked as they are read: None for one that no longer
        matches the digest taken at acceptance (damaged on disk: see *Payload damage* above).
        An item whose kind, event type, lane or dependencies no longer read as its payload
        says has them restored from it (audited ``repair`` by ``hub``) and is left out: the
        sender planned it on what it read, and plans it again as it now reads. Raises
        :class:`StoreDamaged` (and the hub stops, to salvage) for a row whose key is no longer
        its payload's ``txn_id``: its key's index no longer finds it."""

        def query(
            db: sqlite3.Connection,
        ) -> tuple[dict[int, bytes | None], dict[int, tuple[object, ...]], list[str]]:
            marks = ",".join("?" * len(seqs))
            found: dict[int, bytes | None] = {}
            misfiled: dict[int, tuple[object, ...]] = {}
            rekeyed: list[str] = []
            for seq, *columns, payload, digest in db.execute(
                f"SELECT seq, {FILED_COLUMNS}, payload, digest FROM items WHERE seq IN ({marks})",
                seqs,
            ):
                payload = bytes(payload)
                if not payload_intact(payload, bytes(digest)):
                    found[seq] = None
                    continue
                stored = tuple(columns)
                should = refiled(payload, stored)
                if should == stored:
                    found[seq] = payload
                elif should[0] != stored[0]:
                    rekeyed.append(f"seq {seq}")
                else:
                    misfiled[seq] = should
            return found, misfiled, rekeyed

        if not seqs:
            return {}
        found, misfiled, rekeyed = await self._on_reader(query)
        if rekeyed:
            # Its key no longer matches its payload: posted, the sale would go under another
            # id. Damage, as a bad page is: the hub stops, and the salvage at the next start
            # restores the key from the payload (``integrity_check`` finds the row missing
            # from the key's index).
            raise self._damaged(sqlite3.DatabaseError(f"key damaged ({', '.join(rekeyed)})"))
        if misfiled:
            await self._refile(misfiled, now=now)
        return found

    async def _refile(self, misfiled: dict[int, tuple[object, ...]], *, now: float) -> None:
        """Restore items' ``FILED_COLUMNS`` but the key (none of them is indexed) from their
        payloads, as :meth:`payloads` found them; audited."""

        def write(db: sqlite3.Connection) -> None:
            for seq, should in misfiled.items():
                row = db.execute(
                    f"SELECT {FILED_COLUMNS} FROM items WHERE seq = ?", (seq,)
                ).fetchone()
                if row is None or tuple(row) == should:
                    continue
                db.execute(
                    "UPDATE items SET kind = ?, event_type = ?, lane = ?, depends_on = ?"
                    " WHERE seq = ?",
                    (*should[1:], seq),
                )
                names = refiled_names(tuple(row), should)
                log.error("outbox: seq %d: %s damaged on disk; restored from its payload",
                          seq, names)  # fmt: skip
                self._audit(db, now, str(should[0]), "repair", "hub",
                            f"{names} restored from the payload")  # fmt: skip

        await self._write(write)

    async def payload_damage(self) -> PayloadDamage | None:
        """The items parked as :data:`PAYLOAD_DAMAGED` that no re-send has repaired yet."""

        def query(db: sqlite3.Connection) -> PayloadDamage | None:
            row = db.execute(
                "SELECT count(*) AS n, min(seq) AS seq, min(accepted_at) AS at FROM items"
                " INDEXED BY items_parked WHERE status = 'parked' AND last_error GLOB ?",
                (PAYLOAD_DAMAGED + ":*",),
            ).fetchone()
            return PayloadDamage(row["n"], row["seq"], row["at"]) if row["n"] else None

        return await self._on_reader(query)

    async def next_due_at(self) -> float | None:
        """When the earliest pending item becomes due (None: nothing pending)."""
        row = await self._on_reader(
            lambda db: db.execute(
                "SELECT MIN(next_attempt_at) AS at FROM items WHERE status = 'pending'"
            ).fetchone()
        )
        return None if row["at"] is None else float(row["at"])

    async def statuses(self, keys: Iterable[str]) -> dict[str, Status]:
        """Status of each key present in the outbox (absent keys are left out)."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}

        def query(db: sqlite3.Connection) -> dict[str, Status]:
            found: dict[str, Status] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    f"SELECT key, status FROM items WHERE key IN ({marks})", chunk
                ):
                    found[row["key"]] = row["status"]
            return found

        return await self._on_reader(query)

    async def mark_delivered(self, results: Sequence[tuple[int, str]], *, now: float) -> None:
        """(seq, record_id) pairs delivered to the cloud."""
        await self._execute_many(
            "UPDATE items SET status = 'delivered', record_id = ?, delivered_at = ?,"
            " attempts = attempts + 1, last_error = NULL WHERE seq = ? AND status = 'pending'",
            [(record_id, now, seq) for seq, record_id in results],
        )

    async def mark_retry(self, updates: Sequence[tuple[int, int, float, str]]) -> None:
        """(seq, attempts, next_attempt_at, error) for items to try again later."""
        await self._execute_many(
            "UPDATE items SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE seq = ? AND status = 'pending'",
            [(attempts, at, error, seq) for seq, attempts, at, error in updates],
        )

    async def mark_parked(
        self, parked: Sequence[tuple[int, str, Any]], *, now: float, actor: str = "cloud"
    ) -> None:
        """(seq, reason, detail): the cloud rejected these; keep its whole error."""

        def write(db: sqlite3.Connection) -> None:
            for seq, reason, detail in parked:
                row = db.execute(
                    "UPDATE items SET status = 'parked', parked_at = ?, attempts = attempts + 1,"
                    " last_error = ?, error_detail = ? WHERE seq = ? AND status = 'pending'"
                    " RETURNING key",
                    (now, reason, json.dumps(detail) if detail is not None else None, seq),
                ).fetchone()
                if row is not None:
                    self._audit(db, now, row["key"], "parked", actor, reason)

        await self._write(write)

    async def park_damaged(self, seqs: Sequence[int], reason: str, *, now: float) -> list[int]:
        """Park, as :data:`PAYLOAD_DAMAGED` by the hub (not sent: the attempts stay), those of
        ``seqs`` still pending whose payload still fails its digest; returns them. Checked
        again here, on the writer: a register's re-send may have repaired one since the
        sender read it (both run on this thread, so nothing slips in between)."""

        def write(db: sqlite3.Connection) -> list[int]:
            parked = []
            for seq in seqs:
                row = db.execute(
                    "SELECT key, payload, digest FROM items WHERE seq = ? AND status = 'pending'",
                    (seq,),
                ).fetchone()
                if row is None or payload_intact(row["payload"], bytes(row["digest"])):
                    continue
                db.execute(
                    "UPDATE items SET status = 'parked', parked_at = ?, last_error = ?,"
                    " error_detail = NULL WHERE seq = ?",
                    (now, f"{PAYLOAD_DAMAGED}: {reason}", seq),
                )
                self._audit(db, now, row["key"], "parked", "hub", f"{PAYLOAD_DAMAGED}: {reason}")
                parked.append(seq)
            return parked

        return await self._write(write)

    async def release_backoff(self, *, now: float, limit: int) -> int:
        """Make pending items still backing off due ``now`` (the WAN came back), at most
        ``limit`` of them, soonest due first; returns how many. They are found through the
        pending-by-due index, so a write costs what it releases, not the size of the backlog.
        Call again until it returns less than ``limit``: new sales commit in between."""

        def write(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE items SET next_attempt_at = ? WHERE seq IN (SELECT seq FROM items"
                " INDEXED BY items_due WHERE status = 'pending' AND next_attempt_at > ?"
                " ORDER BY next_attempt_at, seq LIMIT ?)",
                (now, now, limit),
            ).rowcount

        return await self._write(write)

    # -- operators -----------------------------------------------------------------------------

    async def retry(self, ref: str, *, actor: str, reason: str, now: float) -> Item:
        """Re-queue an item: a parked one (after the cause was fixed upstream), or a delivered
        one to post it again (the cloud lost or deleted its record; the connectors' upsert by
        external id and idempotency key keep a second post from making a second record)."""
        return await self._operator(ref, "retry", actor, reason, now)

    async def park(self, ref: str, *, actor: str, reason: str, now: float) -> Item:
        """Take a pending item out of delivery until a technician retries it."""
        return await self._operator(ref, "park", actor, reason, now)

    async def retry_all_parked(self, *, actor: str, reason: str, now: float) -> int:
        def write(db: sqlite3.Connection) -> int:
            keys = [r["key"] for r in db.execute("SELECT key FROM items WHERE status='parked'")]
            db.execute(
                "UPDATE items SET status = 'pending', next_attempt_at = ?, parked_at = NULL"
                " WHERE status = 'parked'",
                (now,),
            )
            for key in keys:
                self._audit(db, now, key, "retry", actor, reason)
            return len(keys)

        return await self._write(write)

    async def _operator(self, ref: str, action: str, actor: str, reason: str, now: float) -> Item:
        def write(db: sqlite3.Connection) -> Item:
            item = _find(db, ref)
            if item is None:
                raise UnknownItem(f"no outbox item {ref!r}")
            key, audited = item.key, action
            if action == "park":
                if item.status != "pending":
                    raise WrongState(f"{key!r} is {item.status}: only a pending item is parked")
                db.execute(
                    "UPDATE items SET status = 'parked', parked_at = ?, last_error = ?"
                    " WHERE key = ?",
                    (now, f"parked by {actor}: {reason}", key),
                )
            elif item.status == "parked":
                db.execute(
                    "UPDATE items SET status = 'pending', next_attempt_at = ?, parked_at = NULL"
                    " WHERE key = ?",
                    (now, key),
                )
            elif item.status == "delivered":
                audited = "resend"
                db.execute(
                    "UPDATE items SET status = 'pending', next_attempt_at = ?, delivered_at = NULL,"
                    " record_id = NULL, last_error = ? WHERE key = ?",
                    (now, f"re-sent by {actor} (was record {item.record_id}): {reason}", key),
                )
            else:
                raise WrongState(f"{key!r} is pending already: the hub is sending it")
            self._audit(db, now, key, audited, actor, reason)
            found = _find(db, key)
            assert found is not None
            return found

        return await self._write(write)

    @staticmethod
    def _audit(
        db: sqlite3.Connection, now: float, key: str, action: str, actor: str, reason: str
    ) -> None:
        db.execute(
            "INSERT INTO audit (at, key, action, actor, reason) VALUES (?, ?, ?, ?, ?)",
            (now, key, action, actor, reason),
        )
        log.info("outbox: %s %s by %s: %s", action, key, actor, reason)

    # -- reads --------------------------------------------------------------------------------

    async def get(self, key: str) -> Item | None:
        row = await self._on_reader(
            lambda db: db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE key = ?", (key,)
            ).fetchone()
        )
        return None if row is None else _item(row)

    async def find(self, ref: str) -> Item | None:
        """The item an operator names: by its txn id, or by its seq (the number `edge outbox
        list` shows first) when no item has ``ref`` as its txn id."""
        return await self._on_reader(lambda db: _find(db, ref))

    async def list_items(
        self, status: Status, *, limit: int = 100, after_seq: int = 0
    ) -> list[Item]:
        return await self._on_reader(
            lambda db: [
                _item(r)
                for r in db.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE status = ? AND seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (status, after_seq, limit),
                )
            ]
        )

    async def accepted_between(self, start: float, end: float) -> list[Item]:
        """Every item accepted in ``[start, end)`` (epoch seconds), in sequence order, whatever
        its status (reconciliation; delivered items stay until ``retention_days``)."""
        return await self._on_reader(
            lambda db: [
                _item(r)
                for r in db.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE accepted_at >= ? AND accepted_at < ?"
                    " ORDER BY seq",
                    (start, end),
                )
            ]
        )

    async def audit_log(self, key: str | None = None) -> list[dict[str, Any]]:
        def query(db: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = "SELECT at, key, action, actor, reason FROM audit"
            rows = (
                db.execute(sql + " WHERE key = ? ORDER BY id", (key,))
                if key
                else db.execute(sql + " ORDER BY id")
            )
            return [dict(r) for r in rows]

        return await self._on_reader(query)

    async def stats(self) -> Stats:
        def query(db: sqlite3.Connection) -> Stats:
            # One count per status, each over its own partial index (a GROUP BY read every
            # row of the table once a second: 8 % of the hub's time during a 100,000-sale
            # drain).
            counts = {
                # The status is in the SQL text (a constant of this table): a partial index
                # is usable only when the query's WHERE implies the index's own.
                status: db.execute(
                    f"SELECT COUNT(*) FROM items INDEXED BY {index} WHERE status = '{status}'"
                ).fetchone()[0]
                for status, index in (
                    ("pending", "items_pending_seq"),
                    ("parked", "items_parked"),
                    ("delivered", "items_delivered"),
                )
            }
            # The first pending item is the one waiting longest (also when the wall clock
            # stepped back since). MIN(accepted_at) looked up every pending row: 14 ms a
            # second with 50,000 sales held through an outage.
            first = db.execute(
                "SELECT accepted_at FROM items INDEXED BY items_pending_seq"
                " WHERE status = 'pending' ORDER BY seq LIMIT 1"
            ).fetchone()
            oldest = None if first is None else first["accepted_at"]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            size = db.execute("PRAGMA page_size").fetchone()[0]
            return Stats(
                pending=counts["pending"],
                parked=counts["parked"],
                delivered=counts["delivered"],
                oldest_pending_at=oldest,
                db_bytes=pages * size + self._wal_size(),
            )

        return await self._on_pool(self._stats_pool, query)

    async def prune_delivered(self, *, older_than: float) -> int:
        """Delete delivered items delivered before ``older_than``; returns how many."""
        return await self._write(
            lambda db: (
                db.execute(
                    "DELETE FROM items WHERE status = 'delivered' AND delivered_at < ?",
                    (older_than,),
                ).rowcount
            )
        )

    # -- plumbing ------------------------------------------------------------------------------

    def _wal_size(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            return wal.stat().st_size
        except FileNotFoundError:
            return 0

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA foreign_keys = ON")
            if self._max_page_count is not None:
                db.execute(f"PRAGMA max_page_count = {int(self._max_page_count)}")
            self._local.db = db
        return db

    def _close_local(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _init_schema(self, db: sqlite3.Connection) -> None:
        # Every page of the file and every index entry, once per start (100,000 items, 118 MB:
        # 149 ms warm, quick_check 72 ms; quick_check does not see a row missing from its
        # index, which is what a bit flipped in a key looks like): damage found now is
        # salvaged before a sale is acked on top of it.
        verdict = db.execute("PRAGMA integrity_check(1)").fetchone()[0]
        if verdict != "ok":
            raise StoreDamaged(f"{self.path} is damaged: {' '.join(verdict.split())}")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if row is None:
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        elif int(row["value"]) > SCHEMA_VERSION:
            raise OutboxError(
                f"{self.path} has schema version {row['value']}, newer than this hub "
                f"({SCHEMA_VERSION}): downgrade refused"
            )

    def _check_accepting(self) -> None:
        """Closed (or closing): refuse at once, retryable, instead of queueing work that no
        thread will run (the console answers 503 with it)."""
        if not self._accepting:
            raise StoreClosed("the outbox is not open (the hub is starting or stopping)")

    async def _on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_accepting()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put(_Job(fn, future))
        return await future

    async def _on_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._on_pool(self._reader_pool, fn)

    async def _on_pool(self, pool: ThreadPoolExecutor, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_accepting()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(self._db()))
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise self._damaged(exc) from exc
            raise

    def _damaged(self, exc: sqlite3.Error) -> StoreDamaged:
        """Damage met while running: remembered in :attr:`damage` (the hub stops on it)."""
        damage = StoreDamaged(f"{self.path} is damaged: {exc}")
        if self.damage is None:
            self.damage = damage
        return damage

    async def _execute_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        def run(db: sqlite3.Connection) -> None:
            # Returns nothing on purpose: a cursor handed back to the event loop thread and
            # finalized there while the writer thread uses the connection is SQLITE_MISUSE
            # ("bad parameter or other API misuse", seen under load in the drain bench).
            db.executemany(sql, rows)

        await self._write(run)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One write transaction on the writer thread. ``fn`` must not return a cursor or any
        other sqlite3 object: it would be finalized on another thread. Serialised with the
        group commits."""

        def run(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            return result

        try:
            return await self._on_writer(run)
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise StorageFull(f"outbox storage full: {exc}") from exc
            raise
