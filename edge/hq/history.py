"""What HQ sent and how the hub answered, per delivery: for the console's Config page and
``edge hq status``. Pure: the acknowledgements the link published, in order, in; one entry per
document delivery (newest first) out. A document delivered again (a replay: same bytes, same
``ref``) after its final stage is a new entry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edge.hq.config import Ack

FINAL = frozenset({"applied", "rejected", "rolled_back"})


def by_document(acks: Iterable[Ack]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    open_by_ref: dict[str, dict[str, Any]] = {}
    for ack in acks:
        entry = open_by_ref.get(ack.ref)
        if entry is None:
            entry = {"ref": ack.ref, "kind": ack.kind, "version": ack.version}
            entry |= {"received_at": ack.at, "stages": []}
            entries.append(entry)
            open_by_ref[ack.ref] = entry
        entry["kind"] = entry["kind"] or ack.kind
        if entry["version"] is None:
            entry["version"] = ack.version
        entry["stages"].append(
            {"stage": ack.stage, "at": ack.at, "code": ack.code, "message": ack.message}
        )
        entry["outcome"], entry["code"] = ack.stage, ack.code
        if ack.stage in FINAL:
            del open_by_ref[ack.ref]
    entries.reverse()
    return entries
