"""Enrollment codes and the broker's access rules: pure policy, ``now`` passed in.

An enrollment code is what a technician types on a register (or scans as a QR code): 8
characters of Crockford base32 shown as ``XXXX-XXXX`` (40 bits), case-insensitive, with the
look-alikes O/I/L read as 0/1/1. The hub stores only its SHA-256. A code is single use and
expires (default 15 minutes); wrong guesses are limited per client address and for the whole hub
(:class:`AttemptLimiter`), so 40 bits are far beyond reach of guessing.

Errors carry a stable ``code`` (see :data:`ENROLL_ERRORS`, documented in docs/protocol.md).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from dataclasses import dataclass, field

from edge.bus.topics import Topics

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})

# code -> (HTTP status, meaning). One table: the API, the CLI and the docs test read it.
ENROLL_ERRORS: dict[str, tuple[int, str]] = {
    "MALFORMED": (400, "the request is not the documented JSON object"),
    "INVALID_CSR": (400, "the certificate signing request is not valid PEM or not self-signed"),
    "WEAK_KEY": (400, "the request's key is too weak (EC P-256, RSA 2048+ or Ed25519)"),
    "CODE_INVALID": (403, "no such enrollment code"),
    "CODE_EXPIRED": (403, "the code has expired: create a new one"),
    "CODE_USED": (403, "the code was already used: create a new one"),
    "TOO_MANY_ATTEMPTS": (429, "too many wrong codes: wait and try again"),
    "CERTIFICATE_REQUIRED": (401, "renewal needs the device's current certificate (mutual TLS)"),
    "REVOKED": (403, "the device is revoked or unknown"),
    "NOT_INITIALIZED": (503, "the hub has no identity yet: run `edge init`"),
}


class EnrollError(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or ENROLL_ERRORS[code][1])
        self.code = code

    @property
    def status(self) -> int:
        return ENROLL_ERRORS[self.code][0]


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalize(text: str) -> str:
    """What the technician typed, as the canonical code (no dashes or spaces, upper case)."""
    return "".join(c for c in text.upper() if c not in "- \t").translate(_LOOKALIKES)


def code_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


@dataclass(frozen=True)
class PendingCode:
    name: str
    role: str
    lane: str
    expires_at: float
    used_at: float | None


def check_code(pending: PendingCode | None, now: float) -> PendingCode:
    """The pending enrollment a code names, or the reason it cannot be used."""
    if pending is None:
        raise EnrollError("CODE_INVALID")
    if pending.used_at is not None:
        raise EnrollError("CODE_USED")
    if now >= pending.expires_at:
        raise EnrollError("CODE_EXPIRED")
    return pending


@dataclass
class AttemptLimiter:
    """Wrong codes allowed per client address and for the whole hub within ``window_s``."""

    per_client: int = 5
    overall: int = 20
    window_s: float = 300.0
    _failures: deque[tuple[float, str]] = field(default_factory=deque)

    def check(self, client: str, now: float) -> None:
        self._expire(now)
        mine = sum(1 for _, who in self._failures if who == client)
        if mine >= self.per_client or len(self._failures) >= self.overall:
            raise EnrollError("TOO_MANY_ATTEMPTS")

    def failed(self, client: str, now: float) -> None:
        self._expire(now)
        self._failures.append((now, client))

    def retry_after(self, now: float) -> float:
        self._expire(now)
        return max(0.0, self._failures[0][0] + self.window_s - now) if self._failures else 0.0

    def _expire(self, now: float) -> None:
        while self._failures and self._failures[0][0] <= now - self.window_s:
            self._failures.popleft()


@dataclass(frozen=True)
class Grant:
    """An enrolled, unrevoked device as the broker's ACL sees it."""

    name: str
    role: str
    lane: str


def render_acl(topics: Topics, hub_user: str, grants: list[Grant]) -> str:
    """Mosquitto acl_file: least privilege per role (docs/protocol.md, "Access rules").

    The broker refuses everything not listed. A register publishes only its own lane's requests
    and presence and reads only its own replies and config plus the shared hub, catalogue and
    device status topics; a peripheral or display only its own device subtree.
    """
    root = topics.root
    lines = [
        "# Rendered by edge (edge/security/enrollment.py) at every change. Do not edit.",
        f"user {hub_user}",
        "topic readwrite #",
        "",
    ]
    for grant in sorted(grants, key=lambda g: g.name):
        lines.append(f"user {grant.name}")
        if grant.role == "register":
            lane = f"{root}/lane/{grant.lane}"
            lines += [
                f"topic write {lane}/rpc/+",
                f"topic write {root}/hub/rpc/+",
                f"topic readwrite {lane}/status",
                f"topic read {lane}/reply",
                f"topic read {lane}/config",
            ]
        else:
            lines.append(f"topic readwrite {root}/device/{grant.name}/#")
        lines += [
            f"topic read {root}/hub/status",
            f"topic read {root}/hub/journal/resend",
            f"topic read {root}/catalogue/version",
            f"topic read {root}/device/+/status",
            "",
        ]
    return "\n".join(lines)
