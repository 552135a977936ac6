"""Damage to an SQLite file as a bad sector or a lying disk leaves it, for the salvage tests."""

from __future__ import annotations

import os
from pathlib import Path


def damage_page_holding(path: Path, marker: bytes) -> int:
    """Overwrite with 0xFF bytes the page of the SQLite file ``path`` that holds ``marker``
    (its first occurrence); returns the page number (1-based). The file must have been closed
    cleanly, so that its WAL is checkpointed into it."""
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    page = data.index(marker) // page_size
    with path.open("r+b") as file:
        file.seek(page * page_size)
        file.write(b"\xff" * page_size)
        file.flush()
        os.fsync(file.fileno())
    return page + 1
