"""The promise, checked: records in, findings out (pure: no I/O).

What a chaos run must end with, after the faults stopped and the backlog drained:

- **nothing acknowledged is lost**: every transaction a lane got an ack for is in the cloud, or
  parked on the hub with the cloud's reason (the only explained way not to be there);
- **nothing is twice in the cloud**: every transaction (acknowledged or not: a lane may have
  been switched off before the ack of a sale the hub did take) is recorded at most once;
- **nothing is altered**: what the cloud holds for a sale adds up to what the lane rang up
  (a bit flipped on the hub's disk must never reach the ERP);
- **nothing is in the cloud that no lane rang up**;
- **every parked item is explained**: it carries the cloud's error, and the cloud was told to
  refuse it (a parked sale nobody refused is a valid sale the hub gave up on);
- **nothing is stuck**: once the faults stopped and the drain had its time, nothing is still
  waiting in the outbox;
- **no valid sale refused for good** by the hub (the lanes only ring up valid sales);
- **every register's catalogue equals the hub's** (same cursor, same records);
- **the hub rides out every fault**: it never exits by itself and always starts again after a
  SIGKILL, a full disk included (a hub down takes the store's printers, scales and catalogue
  with it, not only its sales).

Each violation is a :class:`Finding`; the run is clean when there are none.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = ["Catalogue", "Finding", "FindingKind", "OutboxRecord", "Records", "Tally", "check"]


class FindingKind(enum.StrEnum):
    LOST = "lost"
    DUPLICATED = "duplicated"
    PHANTOM = "phantom"
    PARKED_UNEXPLAINED = "parked_unexplained"
    PARKED_UNEXPECTED = "parked_unexpected"
    STUCK = "stuck"
    REFUSED = "refused"
    CATALOGUE_DIFFERS = "catalogue_differs"
    ALTERED = "altered"
    HUB_DOWN = "hub_down"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    subject: str
    """The transaction id, cloud external id or register concerned."""
    detail: str


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A transaction as the hub's outbox holds it at the end."""

    status: str
    """pending, parked or delivered."""
    error: str | None = None
    """The reason it is parked (the cloud's error), or its last delivery error."""


@dataclass(frozen=True, slots=True)
class Catalogue:
    cursor: str | None
    records: Mapping[tuple[str, str], bytes]


@dataclass(frozen=True, slots=True)
class Records:
    rung: frozenset[str]
    """Every transaction id a lane created (sent at least once, acknowledged or not)."""
    acked: frozenset[str]
    """Every transaction id a lane got an acknowledgement for."""
    cloud: Mapping[str, int]
    """Transaction id -> records the cloud created under its external id (absent: none)."""
    cloud_unknown: frozenset[str] = frozenset()
    """External ids of records in the cloud that match no transaction a lane rang up."""
    outbox: Mapping[str, OutboxRecord] = field(default_factory=dict)
    """The hub's outbox at the end, by transaction id (at least every pending or parked
    item, and the status of each acknowledged transaction the cloud does not hold)."""
    rejected: frozenset[str] = frozenset()
    """Transaction ids the cloud was told to refuse (a business rule)."""
    refused: Mapping[str, str] = field(default_factory=dict)
    """Transaction id -> error code, for the transactions the hub refused for good."""
    hub_catalogue: Catalogue | None = None
    lane_catalogues: Mapping[str, Catalogue] = field(default_factory=dict)
    rung_amounts: Mapping[str, Decimal] = field(default_factory=dict)
    """Transaction id -> what the lane rang up, as the cloud's record adds it up."""
    cloud_amounts: Mapping[str, Decimal] = field(default_factory=dict)
    """Transaction id -> what the cloud's record adds up to."""
    hub_exits: tuple[str, ...] = ()
    """How each exit of the hub that no fault caused ended (its code and last log lines)."""
    hub_start_failures: tuple[str, ...] = ()
    """Why each start of the hub failed."""


@dataclass(frozen=True, slots=True)
class Tally:
    """The transaction figures of the summary."""

    sent: int
    acked: int
    delivered: int
    """Acknowledged and in the cloud exactly once."""
    parked: int
    """Acknowledged and parked on the hub (explained or not)."""
    duplicates: int
    lost: int
    stuck: int
    altered: int = 0
    amounts_checked: int = 0
    """Sales whose amount in the cloud was compared with what the lane rang up."""


def check(records: Records) -> tuple[list[Finding], Tally]:
    """Every violation of the promise in ``records``, and the figures."""
    findings: list[Finding] = []
    delivered = parked = 0
    for txn in sorted(records.acked):
        count = records.cloud.get(txn, 0)
        if count >= 1:
            delivered += count == 1
            continue
        held = records.outbox.get(txn)
        if held is None or held.status == "delivered":
            where = "not in the hub's outbox" if held is None else "the hub marked it delivered"
            findings.append(
                Finding(FindingKind.LOST, txn, f"acknowledged, not in the cloud, {where}")
            )
        elif held.status == "parked":
            parked += 1
        elif held.status == "pending":
            findings.append(
                Finding(
                    FindingKind.STUCK,
                    txn,
                    f"still pending after the drain (last error: {held.error or 'none'})",
                )
            )
    for txn in sorted(records.cloud):
        if records.cloud[txn] > 1:
            findings.append(
                Finding(FindingKind.DUPLICATED, txn, f"recorded {records.cloud[txn]} times")
            )
    for txn in sorted(set(records.cloud) - records.rung):
        findings.append(Finding(FindingKind.PHANTOM, txn, "in the cloud, never rung up"))
    for external_id in sorted(records.cloud_unknown):
        findings.append(
            Finding(FindingKind.PHANTOM, external_id, "in the cloud, matches no lane's sale")
        )
    for txn, held in sorted(records.outbox.items()):
        if held.status != "parked":
            continue
        if not (held.error or "").strip():
            findings.append(Finding(FindingKind.PARKED_UNEXPLAINED, txn, "parked without a reason"))
        elif txn not in records.rejected:
            findings.append(
                Finding(
                    FindingKind.PARKED_UNEXPECTED,
                    txn,
                    f"parked though the cloud was never told to refuse it: {held.error}",
                )
            )
    for txn, amount in sorted(records.cloud_amounts.items()):
        rung = records.rung_amounts.get(txn)
        if rung is not None and amount != rung:
            findings.append(
                Finding(
                    FindingKind.ALTERED, txn, f"the cloud holds {amount}, the lane rang up {rung}"
                )
            )
    for txn, code in sorted(records.refused.items()):
        findings.append(Finding(FindingKind.REFUSED, txn, f"refused for good by the hub: {code}"))
    hub = records.hub_catalogue
    if hub is not None:
        for lane, held_by_lane in sorted(records.lane_catalogues.items()):
            if held_by_lane == hub:
                continue
            keys = set(hub.records) | set(held_by_lane.records)
            differ = sum(1 for k in keys if hub.records.get(k) != held_by_lane.records.get(k))
            findings.append(
                Finding(
                    FindingKind.CATALOGUE_DIFFERS,
                    lane,
                    f"cursor {held_by_lane.cursor} vs the hub's {hub.cursor}; "
                    f"{differ} of {len(keys)} records differ",
                )
            )
    for exit_ in records.hub_exits:
        findings.append(Finding(FindingKind.HUB_DOWN, "hub", f"exited by itself: {exit_}"))
    for failure in records.hub_start_failures:
        findings.append(Finding(FindingKind.HUB_DOWN, "hub", f"did not start: {failure}"))
    per_kind = dict.fromkeys(FindingKind, 0)
    for finding in findings:
        per_kind[finding.kind] += 1
    tally = Tally(
        sent=len(records.rung),
        acked=len(records.acked),
        delivered=delivered,
        parked=parked,
        duplicates=per_kind[FindingKind.DUPLICATED],
        lost=per_kind[FindingKind.LOST],
        stuck=per_kind[FindingKind.STUCK],
        altered=per_kind[FindingKind.ALTERED],
        amounts_checked=len(records.cloud_amounts.keys() & records.rung_amounts.keys()),
    )
    return findings, tally
