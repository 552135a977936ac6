"""Damage to an SQLite file as a bad sector or a lying disk leaves it: one page overwritten
with 0xFF bytes (the salvage tests and the chaos suite's ``disk_damage`` fault); and the
quiet kind, one flipped bit inside a stored transaction, which leaves every page valid
(:func:`flip_a_bit_in`)."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path


def page_size(data: bytes) -> int:
    size = int.from_bytes(data[16:18], "big")
    return 65536 if size == 1 else size


def overwrite_page(path: Path, page: int) -> None:
    """Overwrite page ``page`` (1-based) of the SQLite file ``path``."""
    with path.open("r+b") as file:
        size = page_size(file.read(100))
        file.seek((page - 1) * size)
        file.write(b"\xff" * size)
        file.flush()
        os.fsync(file.fileno())


def damage_page_holding(path: Path, marker: bytes) -> int:
    """Overwrite the page that holds ``marker`` (its first occurrence); returns its number.
    The file must have been closed cleanly, so that its WAL is checkpointed into it."""
    data = path.read_bytes()
    page = data.index(marker) // page_size(data) + 1
    overwrite_page(path, page)
    return page


def damage_a_page(path: Path, rng: random.Random) -> int | None:
    """Checkpoint the file's WAL into it (what a hub does as it runs: until then a young file
    holds nothing but its header), then overwrite one page drawn from ``rng``, never the first
    (the header and the schema: a file SQLite would not open at all is a test of its own);
    None for a file of one page."""
    checkpoint(path)
    with path.open("rb") as file:
        data = file.read(100)
    if len(data) < 100:
        return None
    pages = path.stat().st_size // page_size(data)
    if pages < 2:
        return None
    page = rng.randint(2, pages)
    overwrite_page(path, page)
    return page


def checkpoint(path: Path) -> None:
    """Fold the file's WAL into it, so that what it holds is in the file itself."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def flip_a_bit_in(path: Path, marker: bytes, within: bytes) -> int:
    """Flip the lowest bit of the first digit of ``within`` found after ``marker`` (a digit
    stays a digit: 5 becomes 4, a total changes and the JSON stays valid), as a worn flash
    cell does. Every page stays structurally valid: SQLite and ``PRAGMA quick_check`` see
    nothing. Returns the file offset changed. The file must not be open (it is checkpointed
    first)."""

    def first_digit(data: bytes) -> int:
        start = data.index(within, data.index(marker)) + len(within)
        return next(i for i in range(start, len(data)) if 0x30 <= data[i] <= 0x39)

    return _flip_lowest_bit(path, first_digit)


def flip_first_bit_of(path: Path, needle: bytes, *, after: bytes = b"", skip: int = 0) -> int:
    """Flip the lowest bit of the byte ``skip`` bytes into the first ``needle`` found after
    the first ``after`` (a key column, a digest, a status); returns its offset. As
    :func:`flip_a_bit_in`, the file is checkpointed first."""
    return _flip_lowest_bit(path, lambda data: data.index(needle, data.index(after)) + skip)


def _flip_lowest_bit(path: Path, pick: Callable[[bytes], int]) -> int:
    checkpoint(path)
    with path.open("r+b") as file:
        data = file.read()
        offset = pick(data)
        file.seek(offset)
        file.write(bytes([data[offset] ^ 1]))
        file.flush()
        os.fsync(file.fileno())
    return offset


def flip_a_pending_amount(path: Path, rng: random.Random) -> str | None:
    """Flip a bit in the first line amount of a pending sale drawn from ``rng`` (the chaos
    suite's ``disk_damage:bit_rot``): posted as it is, the cloud would book another amount.
    Returns the sale's txn id; None when nothing is pending, or when the flip landed in a
    stale copy of the row (a free page) and the live row is intact. The file must not be
    open."""
    return _flip_in_a_pending_sale(
        path, rng, "payload",
        lambda key, _: flip_a_bit_in(path, f'"txn_id":"{key}"'.encode(), b'"amount":"'),
    )  # fmt: skip


def flip_a_pending_dependency(path: Path, rng: random.Random) -> str | None:
    """Flip a bit in the dependency list of a pending sale drawn from ``rng`` (the chaos
    suite's ``disk_damage:column_rot``): its first byte, so that ``[]`` reads ``Z]``, no longer
    JSON. Every page stays valid and no index holds the column. Returns as
    :func:`flip_a_pending_amount`."""

    def flip(key: str, filed: tuple[str, ...]) -> None:
        # A record holds its text columns one after the other, as the table declares them.
        columns = "".join(filed[:4]).encode()
        flip_first_bit_of(path, columns + filed[4].encode(), skip=len(columns))

    return _flip_in_a_pending_sale(path, rng, "depends_on", flip)


def _flip_in_a_pending_sale(
    path: Path, rng: random.Random, column: str, flip: Callable[[str, tuple[str, ...]], object]
) -> str | None:
    """Draw a pending sale from ``rng``, ``flip(key, its key, kind, event type, lane and
    dependencies)``, and return its key if its ``column`` now reads otherwise (the flip may
    land in a stale copy of the row in a free page instead)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            f"SELECT key, kind, event_type, lane, depends_on, {column} FROM items"
            " WHERE status = 'pending' AND kind = 'sale' ORDER BY seq"
        ).fetchall()
    if not rows:
        return None
    *filed, before = rng.choice(rows)
    flip(filed[0], tuple(filed))
    with contextlib.closing(sqlite3.connect(path)) as db:
        (after,) = db.execute(f"SELECT {column} FROM items WHERE key = ?", (filed[0],)).fetchone()
    return None if after == before else str(filed[0])
