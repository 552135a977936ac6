"""Commands HQ can send, as handlers over the live components (plugged in by the composition
root; ``telemetry.now`` is the link's own).

=====================  ==============================================  ======================
command                what it does                                    result
=====================  ==============================================  ======================
``catalogue.sync``     a catalogue downsync now; waits for it          ``version``, ``mode``,
                       (bounded); a failed sync is COMMAND_FAILED      ``changes``
``outbox.retry_parked``  re-queue every parked item (audited, actor    ``requeued``
                       ``hq``; ``args.reason`` recorded)
``telemetry.now``      publish telemetry at once                       ``seq``
=====================  ==============================================  ======================
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from edge.catalogue.service import SyncResult
from edge.hq.errors import Refused
from edge.hq.handler import CommandHandler


class Syncable(Protocol):
    def request_sync(self) -> asyncio.Future[SyncResult]: ...


class ParkedRetrier(Protocol):
    async def retry_all_parked(self, actor: str, reason: str) -> int: ...


class CommandFailed(Exception):
    """The command ran and did not succeed (acked ``rejected`` / ``COMMAND_FAILED``)."""


def catalogue_sync(catalogue: Syncable, *, timeout_s: float = 60.0) -> CommandHandler:
    """Register it only when the catalogue has a source: without one no sync ever runs and
    the command would wait its whole ``timeout_s`` (documents are handled one at a time, so
    everything behind it would wait too)."""

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            result = await catalogue.request_sync()
        if not result.ok:
            raise CommandFailed(f"sync failed: {result.error or result.reason}")
        return {"version": result.version, "mode": result.mode, "changes": result.changes}

    return run


def outbox_retry_parked(outbox: ParkedRetrier) -> CommandHandler:
    async def run(args: dict[str, Any]) -> dict[str, Any]:
        reason = args.get("reason", "HQ command outbox.retry_parked")
        if not isinstance(reason, str) or len(reason) > 200:
            raise Refused("MALFORMED", "args.reason must be a string of at most 200 characters")
        return {"requeued": await outbox.retry_all_parked(actor="hq", reason=reason)}

    return run
