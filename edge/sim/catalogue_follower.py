"""A register's copy of the catalogue, kept by the hub's feed the way docs/protocol.md
("Catalogue feed") tells a register vendor to: used by the tests, the demo and the chaos suite
to check that every register holds exactly the hub's catalogue.

A :class:`FeedFollower` keeps its records keyed by ``(entity, key)`` and its cursor. Each
:meth:`FeedFollower.pull` fetches the feed from its cursor until the hub says there is no more,
and applies an answer only once its closing ``end`` line has arrived: a broken connection
applies nothing (the next pull starts again from the stored cursor).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from edge.catalogue.store import CatalogueStore

RecordKey = tuple[str, str]


class IncompleteFeed(Exception):
    """The answer ended before its ``end`` line: nothing of it was applied."""


class FeedRefused(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass(slots=True)
class Pulled:
    """One answer of the feed as applied."""

    mode: str
    reason: str
    records: int
    cursor: str
    more: bool
    content_encoding: str


@dataclass(slots=True)
class FeedFollower:
    base_url: str
    """The hub's HTTP address (``http://host:port``)."""
    register: str
    cursor: str | None = None
    records: dict[RecordKey, bytes] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    """Answers applied, by mode (delta, snapshot, current)."""

    async def pull(self, session: aiohttp.ClientSession, *, limit: int = 5000) -> list[Pulled]:
        """Fetch and apply until current; the answers applied, in order."""
        pulled: list[Pulled] = []
        while True:
            answer = await self.fetch(session, limit=limit)
            pulled.append(answer)
            if not answer.more:
                return pulled

    async def fetch(self, session: aiohttp.ClientSession, *, limit: int = 5000) -> Pulled:
        """One request of the feed, applied whole or not at all."""
        query = {"register": self.register, "limit": str(limit)}
        if self.cursor is not None:
            query["cursor"] = self.cursor
        async with session.get(
            f"{self.base_url}/api/v1/catalogue/feed",
            params=query,
            headers={"Accept-Encoding": "gzip"},
        ) as response:
            if response.status != 200:
                raise FeedRefused(response.status, await response.text())
            encoding = response.headers.get("Content-Encoding", "identity")
            body = await response.read()
        return self.apply(body, content_encoding=encoding)

    def apply(self, body: bytes, *, content_encoding: str = "identity") -> Pulled:
        """Apply one answer's NDJSON body (all or nothing)."""
        lines = [msgspec.json.decode(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("type") != "header":
            raise IncompleteFeed("the answer does not start with its header")
        header, end = lines[0], lines[-1]
        if end.get("type") != "end" or len(lines) - 2 != end["records"]:
            raise IncompleteFeed("the answer ended before its end line")
        changes = lines[1:-1]
        if header["mode"] == "snapshot":
            self.records = {}
        for record in changes:
            key = (record["entity"], record["key"])
            if record["op"] == "delete":
                self.records.pop(key, None)
            else:
                self.records[key] = msgspec.json.encode(record["data"])
        self.cursor = end["next_cursor"]
        self.answers[header["mode"]] += 1
        return Pulled(
            header["mode"], header["reason"], len(changes), end["next_cursor"], end["more"],
            content_encoding,
        )  # fmt: skip


async def hub_records(store: CatalogueStore) -> tuple[str, dict[RecordKey, bytes]]:
    """The hub's whole catalogue as a register should hold it, and its cursor (one snapshot)."""
    records: dict[RecordKey, bytes] = {}
    async with store.snapshot() as snapshot:
        async for page in snapshot.pages():
            for record in page.records:
                assert record.data is not None
                records[(record.entity, record.key)] = _canonical(bytes(record.data))
        return f"{snapshot.epoch}:{snapshot.version}", records


def _canonical(data: bytes) -> bytes:
    return msgspec.json.encode(msgspec.json.decode(data))
