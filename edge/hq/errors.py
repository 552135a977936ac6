"""Errors of the HQ link.

::

    HqError                base of everything raised by edge.hq
    ├── Refused            a document from HQ is refused: a stable code (edge.hq.config.HQ_CODES),
    │                      the document's kind and version once it is known authentic, and for
    │                      INVALID_CONFIG the failing key. The hub acks it ``rejected``.
    ├── HqKeyError         the pinned HQ public key cannot be read (not retryable: fix the file;
    │                      the message never quotes key material)
    └── HqStateError       (edge.hq.state) the state file exists but cannot be read: the link
                           does not start rather than forget which versions it processed

Nothing here is raised out of the link's message loop: a refusal becomes an acknowledgement.
"""

from __future__ import annotations

from typing import Any


class HqError(Exception):
    """Base class. ``retryable`` says whether the same input can succeed later."""

    retryable: bool = False


class Refused(HqError):
    """A document is refused with a stable ``code``."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        key: str | None = None,
        kind: Any = None,
        version: int | None = None,
        problems: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.key = key
        self.kind = kind
        self.version = version
        self.problems = problems


class HqKeyError(HqError, ValueError):
    """HQ's pinned signing key is missing or is not an Ed25519 public key."""
