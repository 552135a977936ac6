"""Moving sales between hubs: a consistent copy of an outbox file, and the import of another
hub's undelivered items (a hub replaced after it died with a backlog on its disk).

Both work on files, with the hub running or stopped: SQLite's own locking orders them with the
hub's writes. :func:`backup` uses SQLite's online backup (what the WAL holds is included, a
half-written page never is) and checks the copy. :func:`import_items` appends the source's
pending and parked items through :meth:`OutboxStore.append`, so the idempotency rules of the
intake hold: an item already here (same txn id, same content) is left as it is, the same txn id
with other content is a conflict to look at, and an item whose payload fails its sha256 digest
is damaged and skipped; its key, kind, event type, lane and dependencies are taken from the
payload, whatever the columns read. Delivered items are not imported: the cloud has them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from edge.outbox.salvage import FILED_COLUMNS, payload_intact, refiled
from edge.outbox.store import Entry, KeyConflict, OutboxStore
from edge.outbox.transactions import keys_from_json

IMPORT_BATCH = 500
IMPORTER = "edge outbox import"


@dataclass
class Imported:
    added: int = 0
    already_here: int = 0
    conflicts: list[str] = field(default_factory=list)
    """Txn ids held here with other content: not imported (``edge outbox show`` both)."""
    damaged: list[int] = field(default_factory=list)
    """Source seqs whose payload fails its digest: not imported."""


def backup(source: Path, dest: Path) -> dict[str, int]:
    """Copy the outbox file ``source`` to ``dest`` (which must not exist) consistently; returns
    the copy's items by status. Raises ``ValueError`` when the copy fails its check."""
    if dest.exists():
        raise FileExistsError(f"{dest} exists: choose a new file")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
            verdict = out.execute("PRAGMA integrity_check(1)").fetchone()[0]
            if verdict != "ok":
                raise ValueError(f"the copy fails its check: {verdict}")
            counts = dict(out.execute("SELECT status, count(*) FROM items GROUP BY status"))
        finally:
            out.close()
    finally:
        src.close()
    return {status: int(counts.get(status, 0)) for status in ("pending", "parked", "delivered")}


@dataclass(frozen=True)
class Undelivered:
    seq: int
    entry: Entry | None
    """None when the row is damaged: its payload fails its digest (edge.outbox.salvage)."""
    accepted_at: float
    parked: str | None
    """Why it was parked on the hub it comes from (its last error), or None when pending."""


def undelivered(source: Path) -> list[Undelivered]:
    """Every pending or parked item of the outbox file ``source``, in seq order."""
    db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        rows = db.execute(
            f"SELECT seq, {FILED_COLUMNS}, payload, digest, flags, accepted_at, status,"
            " last_error FROM items WHERE status IN ('pending', 'parked') ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    found = []
    for seq, *stored, payload, digest, flags, accepted, status, last_error in rows:
        parked = (last_error or "parked") if status == "parked" else None
        found.append(Undelivered(seq, _entry(stored, bytes(payload), digest, flags), accepted,
                                 parked))  # fmt: skip
    return found


def _entry(stored: list[object], payload: bytes, digest: object, flags: str | None) -> Entry | None:
    """The item as it was accepted: None when its payload fails its digest; its key, kind,
    event type, lane and dependencies as its payload says (edge.outbox.salvage.refiled)."""
    if not payload_intact(payload, digest):
        return None
    key, kind, event_type, lane, depends_on = (str(v) for v in refiled(payload, tuple(stored)))
    try:
        dependencies = tuple(json.loads(depends_on))
    except ValueError:  # not a transaction, and its own column no longer parses
        return None
    return Entry(key=key, kind=kind, event_type=event_type, lane=lane, payload=payload,
                 depends_on=dependencies, flags=keys_from_json(flags))  # fmt: skip


async def import_items(source: Path, store: OutboxStore, *, now: float) -> Imported:
    """Append the undelivered items of the outbox file ``source`` to the open ``store``, each
    with its original acceptance time (so its age and order are kept). An item parked there is
    parked here too, by ``edge outbox import``, with the reason it had (audited)."""
    result = Imported()
    items = await asyncio.to_thread(undelivered, source)
    for start in range(0, len(items), IMPORT_BATCH):
        batch = items[start : start + IMPORT_BATCH]
        result.damaged += [item.seq for item in batch if item.entry is None]
        intact = [(item, item.entry) for item in batch if item.entry is not None]
        outcomes = await asyncio.gather(
            *(store.append(entry, now=item.accepted_at) for item, entry in intact),
            return_exceptions=True,
        )
        for (item, entry), outcome in zip(intact, outcomes, strict=True):
            if isinstance(outcome, KeyConflict):
                result.conflicts.append(entry.key)
            elif isinstance(outcome, BaseException):
                raise outcome
            elif outcome.duplicate:
                result.already_here += 1
            else:
                result.added += 1
                if item.parked is not None:
                    reason = f"parked on the hub of {source.name}: {item.parked}"
                    await store.park(entry.key, actor=IMPORTER, reason=reason[:500], now=now)
    return result
