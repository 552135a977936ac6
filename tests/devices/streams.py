"""Helpers for stream-parser tests: feed the same bytes in arbitrary pieces."""

from __future__ import annotations

from typing import Protocol, TypeVar

E = TypeVar("E")


class StreamParser(Protocol[E]):
    def feed(self, data: bytes) -> list[E]: ...


def feed_in_pieces(parser: StreamParser[E], data: bytes, cuts: list[int]) -> list[E]:
    """Feed ``data`` cut at the offsets in ``cuts`` (any order, out-of-range ignored)."""
    events: list[E] = []
    previous = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        events += parser.feed(data[previous:cut])
        previous = cut
    return events
