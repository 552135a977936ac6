"""The Config page's history: acknowledgements grouped per delivery, newest first."""

from __future__ import annotations

from edge.hq.config import Ack
from edge.hq.history import by_document


def ack(ref: str, stage: str, version: int | None = 1, code: str | None = None) -> Ack:
    kind = "config" if version is not None else None
    return Ack(
        store_id="s1", hub_id="h", stage=stage, ref=ref, at=f"t-{stage}",  # type: ignore[arg-type]
        kind=kind, version=version, code=code,
    )  # fmt: skip


def test_deliveries_in_order_with_their_outcome() -> None:
    acks = [
        ack("a", "received"), ack("a", "validated"), ack("a", "applied"),
        ack("b", "received", 2), ack("b", "validated", 2),
        ack("b", "rolled_back", 2, "NOT_READY"),
        ack("junk", "rejected", None, "MALFORMED"),
        ack("a", "rejected", 1, "STALE_VERSION"),  # the first document, replayed
    ]  # fmt: skip
    docs = by_document(acks)
    assert [(d["ref"], d["version"], d["outcome"], d["code"]) for d in docs] == [
        ("a", 1, "rejected", "STALE_VERSION"),
        ("junk", None, "rejected", "MALFORMED"),
        ("b", 2, "rolled_back", "NOT_READY"),
        ("a", 1, "applied", None),
    ]
    assert [s["stage"] for s in docs[3]["stages"]] == ["received", "validated", "applied"]
    assert by_document([]) == []
