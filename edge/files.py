"""Durable file replacement: a crash or a power cut leaves the old file or the new one, never a
mix, and a completed write survives. Blocking; call it from a worker thread on the hub."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(
    path: Path, data: bytes, mode: int = 0o600, *, owner_of: Path | None = None
) -> None:
    """Write ``data`` to a temporary file next to ``path`` (``mode``), fsync it, rename it over
    ``path``, fsync the directory. ``owner_of``: when running as root, give the file to that
    directory's owner (a technician's ``sudo edge ...`` must leave files the hub can read)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            if owner_of is not None and os.geteuid() == 0:
                owner = owner_of.stat()
                os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename (or a new file) in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
