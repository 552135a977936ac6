"""The connector interface: how the outbox sender hands items to a cloud.

A connector turns a batch of outbox items into one or more calls to its cloud and returns one
outcome per item, in order. Outcomes are the outbox policy's vocabulary (edge.outbox.policy):

- ``Delivered(record_id)``: the cloud holds it (also when the cloud says it already had it);
- ``RetryLater(reason, kind, retry_after)``: nothing is known to be wrong with the item; the
  cloud was unreachable (``connection``), too slow (``timeout``), throttling (``throttled``) or
  failing (``server``);
- ``Rejected(code, message, detail)``: the cloud refused the item itself; it is parked with
  ``detail`` (the cloud's whole error) for a technician.

A connector never raises for a cloud failure: it classifies it. It raises only for its own bugs.
Connectors must be idempotent by item key: the sender may deliver an item again after a crash or
a lost response, and the cloud must not record it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from edge.outbox.policy import Delivered, Rejected, RetryLater

Outcome = Delivered | RetryLater | Rejected


@dataclass(frozen=True, slots=True)
class Outbound:
    """One outbox item as a connector sees it."""

    seq: int
    key: str
    kind: str
    event_type: str
    lane: str
    payload: bytes
    accepted_at: float
    attempts: int = 0
    """Attempts already recorded for this item (0: first send). A connector derives request
    idempotency keys from it: a re-send of the same attempt (after a crash) reuses the key, a
    new attempt (after a rejection was fixed, say) must not, or the cloud would replay its
    stored answer."""


class Connector(Protocol):
    name: str
    max_batch: int
    """Largest batch the cloud accepts in one call (1: no batching)."""
    max_concurrency: int
    """Calls in flight at once that the cloud allows (account-wide limits live here)."""

    async def deliver(self, batch: Sequence[Outbound]) -> list[Outcome]:
        """One outcome per item of ``batch``, in order. Never raises for cloud failures."""
        ...

    async def aclose(self) -> None: ...
