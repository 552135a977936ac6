"""The hub's files on disk: durable replacement (a crash or a power cut leaves the old file or
the new one, never a mix, and a completed write survives), the space reserve, and what a full
disk looks like. Blocking; call them from a worker thread on the hub."""

from __future__ import annotations

import contextlib
import os
import sqlite3
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


def is_disk_full(exc: sqlite3.Error) -> bool:
    """SQLite says the disk (or the file's page limit) has no room: SQLITE_FULL."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


class SpaceReserve:
    """A file holding ``size`` bytes of the state disk for the hub's own files. A hub started on
    a full disk could not open its SQLite files (a WAL's shared memory, the first commit need
    room): :meth:`release` gives the room back, and :meth:`make` takes it again once the disk
    has it to spare. Blocking; call it from a worker thread on the hub."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def held(self) -> bool:
        return self.path.exists()

    def release(self) -> bool:
        """Delete the reserve; False when there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    def make(self) -> None:
        """Allocate the reserve (``posix_fallocate``: the blocks are the file's, no data is
        written), durably. Raises :class:`OSError` (no space: the reserve stays missing)."""
        tmp = self.path.with_name(f".{self.path.name}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.size)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename (or a new file) in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
