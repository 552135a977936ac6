"""Catalogue fixtures: a real catalogue file in tmp_path, and a register's copy fed from it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.catalogue.feed import ChangePage, Cursor, SnapshotPage
from edge.catalogue.store import CatalogueStore
from tests.catalogue.builders import DAY


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CatalogueStore]:
    s = CatalogueStore(tmp_path / "catalogue.db", tombstone_retention=30 * DAY)
    await s.open()
    yield s
    await s.close()


class Replica:
    """What a register keeps: (entity, key) → record bytes, and its cursor. It applies pages
    exactly as the feed's docstring tells a register to."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], bytes] = {}
        self.cursor: Cursor | None = None

    def apply_changes(self, page: ChangePage) -> None:
        for record in page.records:
            if record.op == "delete":
                self.records.pop((record.entity, record.key), None)
            else:
                assert record.data is not None
                self.records[(record.entity, record.key)] = bytes(record.data)
        self.cursor = Cursor.parse(page.next_cursor)

    def apply_snapshot(self, pages: list[SnapshotPage]) -> None:
        assert pages[-1].last
        self.records = {
            (r.entity, r.key): bytes(r.data)  # type: ignore[arg-type]
            for page in pages
            for r in page.records
        }
        self.cursor = Cursor(pages[0].epoch, pages[0].version)

    async def sync(self, store: CatalogueStore, *, limit: int = 5000) -> str:
        """Bring the copy up to date the way a register does; returns the mode used."""
        decision = await store.plan_feed(self.cursor)
        if decision.mode == "snapshot":
            async with store.snapshot() as snap:
                self.apply_snapshot([page async for page in snap.pages(limit)])
        elif decision.mode == "delta":
            assert self.cursor is not None
            while True:
                page = await store.changes_since(self.cursor, limit=limit)
                self.apply_changes(page)
                if not page.more:
                    break
        return decision.mode


async def current_records(store: CatalogueStore) -> dict[tuple[str, str], bytes]:
    """The hub's whole catalogue, read through a snapshot."""
    async with store.snapshot() as snap:
        return {
            (r.entity, r.key): bytes(r.data)  # type: ignore[arg-type]
            async for page in snap.pages()
            for r in page.records
        }
