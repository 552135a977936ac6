"""A bounded frame scanner shared by the scale stream parsers (private).

Theory of operation: bytes arrive in arbitrary pieces, with garbage between frames (a
scale powered up mid-frame, line noise, a second device on the same wire). The scanner
keeps a buffer of at most ``max_frame`` bytes of an unfinished frame and, each time an
end delimiter arrives, tries the start delimiters before it, *earliest first*, handing
``decode`` each candidate ``start … end``. The first candidate that decodes wins; bytes
before it and whole undecodable candidates are dropped and counted in ``discarded``.

Earliest first matters: in ``LF weight CR LF status CR ETX`` the later ``LF`` also starts a
(shorter) valid frame. Decoders must therefore reject a start delimiter inside a frame's
body, so that garbage ending in a stray start byte cannot swallow the real frame.

The result depends only on the bytes, never on how they were split across ``feed`` calls:
a candidate longer than ``max_frame`` is skipped both when it arrives in one piece and
when the buffer is trimmed while waiting for its end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from devices.errors import FrameError

__all__ = ["FrameScanner", "strip_parity"]

T = TypeVar("T")

_STRIP_PARITY = bytes(b & 0x7F for b in range(256))


def strip_parity(data: bytes) -> bytes:
    """Clear bit 7 of every byte.

    For 7-bit protocols (7E1 / 7O1): a UART set to 7 data bits already delivers bit 7 = 0,
    and one set to 8N1 delivers the parity bit there (7 data + parity + 1 stop is the same
    10-bit character as 8N1). Clearing it makes both work, which matters where 7-bit serial
    settings are refused (ptys, some USB adapters: peripherals.md §4.3).
    """
    return data.translate(_STRIP_PARITY)


class FrameScanner(Generic[T]):
    """Frames between ``start`` and ``end`` delimiters; never raises on any input.

    ``start`` may be empty (a protocol framed only by its end, e.g. CR LF lines): then
    every offset is a candidate start.
    """

    def __init__(
        self,
        *,
        start: bytes,
        end: bytes,
        decode: Callable[[bytes], T],
        max_frame: int,
    ) -> None:
        if not end:
            raise ValueError("end delimiter must not be empty")
        if max_frame < len(start) + len(end):
            raise ValueError("max_frame is shorter than the delimiters")
        self._start = start
        self._end = end
        self._decode = decode
        self._max_frame = max_frame
        self._buf = bytearray()
        self.discarded = 0
        """Bytes dropped so far: garbage between frames and frames that did not decode."""

    def feed(self, data: bytes) -> list[T]:
        """Add received bytes; return the frames they completed, in order."""
        self._buf += data
        out: list[T] = []
        while self._next(out):
            pass
        return out

    @property
    def pending(self) -> int:
        """Bytes held for a frame whose end has not arrived yet (at most ``max_frame``)."""
        return len(self._buf)

    def _drop(self, count: int) -> None:
        self.discarded += count
        del self._buf[:count]

    def _next(self, out: list[T]) -> bool:
        """Consume one frame or one run of garbage; False when more bytes are needed."""
        buf = self._buf
        first = buf.find(self._start)
        if first < 0:
            # Keep a tail that may be the beginning of a split start delimiter.
            keep = 0
            for size in range(len(self._start) - 1, 0, -1):
                if buf.endswith(self._start[:size]):
                    keep = size
                    break
            self._drop(len(buf) - keep)
            return False
        if first > 0:
            self._drop(first)
            return True
        end = buf.find(self._end, len(self._start))
        if end < 0:
            if len(buf) < self._max_frame:
                return False
            # The frame from here would exceed max_frame even if its end came next: go
            # to the first start from which a frame can still fit.
            nxt = buf.find(self._start, max(1, len(buf) - self._max_frame + 1))
            self._drop(len(buf) if nxt < 0 else nxt)
            return True
        frame_end = end + len(self._end)
        pos = buf.find(self._start, max(0, frame_end - self._max_frame))
        while 0 <= pos < end:
            try:
                decoded = self._decode(bytes(buf[pos:frame_end]))
            except FrameError:
                pos = buf.find(self._start, pos + 1)
                continue
            self.discarded += pos
            del buf[:frame_end]
            out.append(decoded)
            return True
        self._drop(frame_end)
        return True
