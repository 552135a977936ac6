"""The device codecs' error tree (pure: no I/O anywhere in ``devices``).

::

    DeviceError          base
    └── FrameError       bytes from a device break its protocol (the *remote* side is at
                         fault): a status byte with the wrong fixed bits, a scale frame with
                         a bad weight field, a wrong checksum, …; ``code`` is one of the
                         stable strings below, ``frame`` the offending bytes

``FrameError.retryable`` is true: asking the device again can help when line noise or a
half-read frame is the cause. The same code on every poll means the device speaks another
protocol, or the serial settings (baud rate, data bits, parity) do not match it.

A caller passing a bad argument to an encoder (a brightness of 9, a status request n = 5)
is a programming error on *our* side and raises ``ValueError``, never a ``DeviceError``.

Stream parsers (``ToledoParser`` and friends) never raise: they drop what they cannot
decode and count it, so one noisy byte cannot stop a reader loop.
"""

from __future__ import annotations

__all__ = [
    "CHECKSUM",
    "FRAME_DELIMITER",
    "FRAME_LENGTH",
    "STATUS_FIXED_BITS",
    "STATUS_LENGTH",
    "STATUS_UNKNOWN",
    "UNIT_UNKNOWN",
    "WEIGHT_FORMAT",
    "DeviceError",
    "FrameError",
]

# Stable codes: safe to match on, log and count in metrics. Never rename one.
STATUS_LENGTH = "status-length"
"""A real-time status answer that is not exactly one byte."""
STATUS_FIXED_BITS = "status-fixed-bits"
"""A status byte whose always-0 / always-1 bits are wrong (not a status byte at all)."""
STATUS_UNKNOWN = "status-unknown"
"""A status field holding a value the protocol does not define."""
FRAME_DELIMITER = "frame-delimiter"
"""A frame that does not start or end with the protocol's control bytes."""
FRAME_LENGTH = "frame-length"
"""A frame, or a field in it, of the wrong length or with the wrong number of fields."""
WEIGHT_FORMAT = "weight-format"
"""A weight field that is not a decimal number in the protocol's layout."""
UNIT_UNKNOWN = "unit-unknown"
"""A unit of measure the codec does not know."""
CHECKSUM = "checksum"
"""A frame whose block check character does not match its contents."""


class DeviceError(Exception):
    retryable = False


class FrameError(DeviceError):
    """Bytes from a device that break its protocol.

    ``code`` is one of this module's constants; ``message`` says what was expected, for a
    technician; ``frame`` holds the bytes that were rejected, when there are any.
    """

    retryable = True

    def __init__(self, code: str, message: str, *, frame: bytes | None = None) -> None:
        detail = message if frame is None else f"{message} (frame {frame!r})"
        super().__init__(f"[{code}] {detail}")
        self.code = code
        self.message = message
        self.frame = frame
