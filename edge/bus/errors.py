"""Errors of the bus, and the stable error codes of request/response.

::

    BusError                      base of everything raised by edge.bus
    ├── BusUnavailable            not connected to the broker (retryable)
    └── RequestError              a request that gets an error reply; carries a stable code
                                  (raise it from a handler to reply with that code)

Handlers raise :class:`RequestError`; the router turns it into the reply. Anything else a handler
raises becomes ``INTERNAL`` (logged with its traceback), never a crash of the hub.
"""

from __future__ import annotations

from typing import Any, Final


class BusError(Exception):
    """Base class. ``retryable`` says whether trying again later can help."""

    retryable: bool = False


class BusUnavailable(BusError):
    """The hub is not connected to its broker right now."""

    retryable = True


class ErrorCode:
    """Stable error codes of the request/response protocol (docs/protocol.md)."""

    MALFORMED_JSON: Final = "MALFORMED_JSON"
    SCHEMA_INVALID: Final = "SCHEMA_INVALID"
    UNSUPPORTED_VERSION: Final = "UNSUPPORTED_VERSION"
    TOO_LARGE: Final = "TOO_LARGE"
    UNKNOWN_METHOD: Final = "UNKNOWN_METHOD"
    UNAVAILABLE: Final = "UNAVAILABLE"
    TIMEOUT: Final = "TIMEOUT"
    INTERNAL: Final = "INTERNAL"


#: code -> (retryable, meaning). docs/protocol.md lists the same table; a test keeps them equal.
ERROR_CODES: Final[dict[str, tuple[bool, str]]] = {
    ErrorCode.MALFORMED_JSON: (False, "The payload is not UTF-8 JSON."),
    ErrorCode.SCHEMA_INVALID: (False, "The envelope or its data does not match the schema."),
    ErrorCode.UNSUPPORTED_VERSION: (False, "The envelope version `v` is not one the hub speaks."),
    ErrorCode.TOO_LARGE: (False, "The payload is larger than the hub's maximum request size."),
    ErrorCode.UNKNOWN_METHOD: (False, "No such method on this topic."),
    ErrorCode.UNAVAILABLE: (True, "The hub cannot take this now (starting or stopping)."),
    ErrorCode.TIMEOUT: (True, "The hub did not finish the request in time; retry it."),
    ErrorCode.INTERNAL: (True, "An unexpected hub error; logged with a reference."),
}


class RequestError(BusError):
    """Raise from a handler to send an error reply with a stable ``code``."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        known = ERROR_CODES.get(code)
        self.retryable = retryable if retryable is not None else bool(known and known[0])
        self.details = details
