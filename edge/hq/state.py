"""What the HQ link remembers across restarts: ``<state_dir>/hq-state.json``.

- ``last_version``: per kind, the highest version processed (whatever its outcome). A document
  is processed at most once: the version is recorded *before* the hub acknowledges
  ``received``, so a copy delivered again (a reconnect, a restart, a replay) is STALE_VERSION.
- ``applied_version`` and ``applied``: the config in force, recorded only once it was applied
  and the hub was ready. After a restart it is applied again (a restore, not a new
  application: no acknowledgement), so HQ's settings survive the hub's own.

Written atomically (temporary file, fsync, rename, fsync of the directory): a crash leaves the
old or the new file, never a mix. Blocking: call it from a worker thread.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from edge.files import atomic_write
from edge.hq.config import HqConfig
from edge.hq.errors import HqError

STATE_FORMAT = 1


class HqStateError(HqError):
    """The state file exists but cannot be read: the link refuses to start rather than forget
    which versions it processed (which would let a replay through)."""


class LastVersions(msgspec.Struct, kw_only=True):
    config: int = 0
    command: int = 0


class HqState(msgspec.Struct, kw_only=True):
    format: int = STATE_FORMAT
    last_version: LastVersions = msgspec.field(default_factory=LastVersions)
    applied_version: int = 0
    applied: HqConfig | None = None


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> HqState:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return HqState()
        except OSError as exc:
            raise HqStateError(f"{self.path}: cannot read: {exc.strerror}") from exc
        try:
            state = msgspec.json.decode(data, type=HqState)
        except msgspec.DecodeError as exc:
            raise HqStateError(f"{self.path}: not a valid HQ state file: {exc}") from exc
        if state.format != STATE_FORMAT:
            raise HqStateError(f"{self.path}: format {state.format}, expected {STATE_FORMAT}")
        return state

    def save(self, state: HqState) -> None:
        atomic_write(self.path, msgspec.json.encode(state))
