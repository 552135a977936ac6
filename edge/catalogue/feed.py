"""The register feed: cursors, the delta-or-snapshot decision, and the records on the wire.
Pure: no I/O, no clock.

Theory of operation
-------------------
Every change the hub applies to its catalogue gets the next number of one monotonic sequence;
the catalogue's *version* is the last number given. The store's ``changes`` table holds, for
every key ever seen, its latest change (an upsert, or a *tombstone* for a deletion), so "what
changed since N" is every row above N, each once, in order. A register keeps a *cursor*: the
catalogue it follows (the *epoch*, a random id made when the hub's catalogue file was created)
and the version it has applied.

Tombstones are pruned after a retention period; the highest pruned sequence is the *oldest
cursor available*: a register at or above it can be brought up to date with a delta, one below
it might miss a deletion. :func:`decide_feed` chooses, in this order:

1. no cursor → ``snapshot`` (``no_cursor``): a new or reset register;
2. another epoch → ``snapshot`` (``other_catalogue``): the hub's catalogue file was recreated,
   so sequence numbers from before mean nothing;
3. cursor above the version → ``snapshot`` (``cursor_ahead``): same as 2 (a restored backup);
4. cursor at the version → ``current``;
5. cursor below the oldest available → ``snapshot`` (``stale``);
6. the delta would be bigger than the snapshot (``delta_size > snapshot_size × ratio``) →
   ``snapshot`` (``delta_larger``): a register that was off for a month;
7. otherwise → ``delta``.

Sizes are estimates in any one unit (the store uses records, a tombstone counting for
:data:`TOMBSTONE_WEIGHT` of an upsert: it carries a key and no record).

A register applies a delta's records in order (upsert: replace the record; delete: remove it)
and then stores the page's ``next_cursor``. A snapshot is read in ONE read transaction, so its
pages together are the catalogue at exactly ``version``; the register replaces its copy with
them and then stores ``Cursor(epoch, version)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import msgspec

from edge.catalogue.errors import InvalidCursor
from edge.catalogue.model import Entity

__all__ = [
    "TOMBSTONE_WEIGHT",
    "ChangePage",
    "Cursor",
    "FeedDecision",
    "FeedMode",
    "FeedReason",
    "Record",
    "SnapshotPage",
    "decide_feed",
    "delta_size",
]

FeedMode: TypeAlias = Literal["delta", "snapshot", "current"]
FeedReason: TypeAlias = Literal[
    "no_cursor",
    "other_catalogue",
    "cursor_ahead",
    "current",
    "stale",
    "delta_larger",
    "delta_smaller",
]
Op: TypeAlias = Literal["upsert", "delete"]

TOMBSTONE_WEIGHT: Final = 0.2
_EPOCH: Final = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A register's position: ``<epoch>:<seq>`` on the wire."""

    epoch: str
    seq: int

    def __post_init__(self) -> None:
        if not _EPOCH.match(self.epoch):
            raise InvalidCursor(f"cursor epoch {self.epoch!r} is not 32 lowercase hex digits")
        if self.seq < 0:
            raise InvalidCursor(f"cursor sequence {self.seq} is negative")

    @classmethod
    def parse(cls, token: str) -> Cursor:
        epoch, sep, seq = token.partition(":")
        if not sep or not seq.isdigit() or not seq.isascii() or len(seq) > 19:
            raise InvalidCursor(f"{token!r} is not a catalogue cursor (<epoch>:<sequence>)")
        return cls(epoch, int(seq))

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"


@dataclass(frozen=True, slots=True)
class FeedDecision:
    mode: FeedMode
    reason: FeedReason
    detail: str
    """One sentence for logs and the console."""


def delta_size(upserts: int, tombstones: int) -> float:
    """The size estimate of a delta of ``upserts`` records and ``tombstones`` deletions."""
    return upserts + tombstones * TOMBSTONE_WEIGHT


def decide_feed(
    *,
    cursor: Cursor | None,
    epoch: str,
    version: int,
    oldest_available: int,
    delta_size: float,
    snapshot_size: float,
    snapshot_ratio: float = 1.0,
) -> FeedDecision:
    """Delta, snapshot or nothing for a register at ``cursor`` (rules in the module docstring).

    ``delta_size``: the estimated size of the changes above the cursor; ``snapshot_size``: of
    the whole catalogue (same unit). A register within the window gets a delta up to
    ``snapshot_ratio`` times the snapshot (a delta is cheaper to apply than a full replace).
    """
    if cursor is None:
        return FeedDecision("snapshot", "no_cursor", "the register has no catalogue yet")
    if cursor.epoch != epoch:
        return FeedDecision(
            "snapshot",
            "other_catalogue",
            f"the register follows catalogue {cursor.epoch}, the hub serves {epoch}",
        )
    if cursor.seq > version:
        return FeedDecision(
            "snapshot",
            "cursor_ahead",
            f"the register is at {cursor.seq}, beyond the hub's version {version}",
        )
    if cursor.seq == version:
        return FeedDecision("current", "current", f"the register is at version {version}")
    if cursor.seq < oldest_available:
        return FeedDecision(
            "snapshot",
            "stale",
            f"deletions up to {oldest_available} were pruned; the register is at {cursor.seq}",
        )
    if delta_size > snapshot_size * snapshot_ratio:
        return FeedDecision(
            "snapshot",
            "delta_larger",
            f"{version - cursor.seq} versions behind: the delta (~{delta_size:.0f}) is larger "
            f"than a snapshot (~{snapshot_size:.0f})",
        )
    return FeedDecision(
        "delta",
        "delta_smaller",
        f"delta from {cursor.seq} to {version} (~{delta_size:.0f}, snapshot ~{snapshot_size:.0f})",
    )


# --------------------------------------------------------------------------------------------
# Records on the wire (the register HTTP API streams these; the record bytes are the store's
# canonical JSON, embedded raw).


class Record(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    seq: int
    """The change sequence that last touched this key."""
    entity: Entity
    key: str
    op: Op
    data: msgspec.Raw | None = None
    """The record (upserts); absent for a tombstone."""


class ChangePage(msgspec.Struct, frozen=True, kw_only=True):
    """Changes after ``since``, in sequence order."""

    epoch: str
    since: int
    version: int
    """The hub's version when the page was read."""
    records: list[Record]
    next_cursor: str
    """Store this after applying the page (``<epoch>:<last seq in the page>``)."""
    more: bool
    """True: ask again from ``next_cursor``."""


class SnapshotPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a snapshot; every page of one snapshot has the same ``version``."""

    epoch: str
    version: int
    number: int
    """0, 1, 2, … in the order they were read."""
    records: list[Record]
    last: bool
    """True on the final page: store ``<epoch>:<version>`` as the cursor."""
