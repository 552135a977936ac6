"""Injected faults of the simulated NetSuite: a one-shot FIFO script and seeded random draws.

Theory of operation
-------------------
Each request to ``/services/rest/...`` that has been admitted by governance draws at most one
fault, before authentication, as a sick gateway or server in front of NetSuite would strike:

1. the *script*: the first queued :class:`Fault` whose ``target`` matches the request's kind
   (``any`` matches every request) is removed and used; faults aimed at other kinds stay queued
   in order, so a test can aim "lose the answer of the next record write" past the token fetch
   and the job polls in between;
2. otherwise the *profile*: one draw of ``random.Random(seed)`` against the cumulative
   probabilities of :class:`FaultProfile`; the same seed and the same request order give the same
   faults. A request that draws no fault may get a uniform extra latency.

What each kind looks like to a client is in :class:`FaultKind`. The plan is pure: the aiohttp
shell does the sleeping, the hanging and the connection abort.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from typing import Final

import msgspec

__all__ = [
    "SERVER_ERROR_STATUSES",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FaultProfile",
    "FaultTarget",
]

SERVER_ERROR_STATUSES: Final = (500, 502, 503)


class FaultKind(enum.StrEnum):
    LATENCY = "latency"
    """Wait ``delay_s`` more (holding the concurrency slot), then serve normally."""
    THROTTLE = "throttle"
    """429 in nsError shape, as when the account's concurrency limit is hit (ref §6)."""
    UNAUTHORIZED = "unauthorized"
    """401 INVALID_LOGIN with valid credentials: the field-reported overload quirk (ref §6)."""
    SERVER_ERROR = "server_error"
    """``status`` (500, 502 or 503) in nsError shape, without touching any state."""
    TIMEOUT = "timeout"
    """Never answer: the request hangs until the client gives up or the server stops."""
    RESET = "reset"
    """Abort the connection with RST, without an answer and without touching any state."""
    COMMIT_THEN_LOSE = "commit_then_lose"
    """Process the request fully (a record write commits), then abort the connection."""


class FaultTarget(enum.StrEnum):
    """Which requests a fault may strike."""

    ANY = "any"
    RECORD = "record"
    """``/record/v1/...``: creates, upserts, transforms, reads."""
    SUITEQL = "suiteql"
    JOB = "job"
    """``/async/v1/job/...`` polls."""
    TOKEN = "token"
    """The OAuth 2.0 token endpoint."""
    OTHER = "other"


class Fault(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One injected fault. Build with the class methods; the fields are also the JSON form."""

    kind: FaultKind
    target: FaultTarget = FaultTarget.ANY
    status: int = 503
    delay_s: float = 0.0
    retry_after_s: int | None = None

    def __post_init__(self) -> None:
        if self.kind is FaultKind.SERVER_ERROR and self.status not in SERVER_ERROR_STATUSES:
            raise ValueError(f"server_error status must be one of {SERVER_ERROR_STATUSES}")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError("delay_s must be a finite number >= 0")
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")

    @classmethod
    def latency(cls, delay_s: float, target: FaultTarget = FaultTarget.ANY) -> Fault:
        return cls(kind=FaultKind.LATENCY, delay_s=delay_s, target=target)

    @classmethod
    def throttle(
        cls, target: FaultTarget = FaultTarget.ANY, retry_after_s: int | None = None
    ) -> Fault:
        return cls(kind=FaultKind.THROTTLE, target=target, retry_after_s=retry_after_s)

    @classmethod
    def unauthorized(cls, target: FaultTarget = FaultTarget.ANY) -> Fault:
        return cls(kind=FaultKind.UNAUTHORIZED, target=target)

    @classmethod
    def server_error(cls, status: int = 503, target: FaultTarget = FaultTarget.ANY) -> Fault:
        return cls(kind=FaultKind.SERVER_ERROR, status=status, target=target)

    @classmethod
    def timeout(cls, target: FaultTarget = FaultTarget.ANY) -> Fault:
        return cls(kind=FaultKind.TIMEOUT, target=target)

    @classmethod
    def reset(cls, target: FaultTarget = FaultTarget.ANY) -> Fault:
        return cls(kind=FaultKind.RESET, target=target)

    @classmethod
    def commit_then_lose(cls, target: FaultTarget = FaultTarget.ANY) -> Fault:
        return cls(kind=FaultKind.COMMIT_THEN_LOSE, target=target)


class FaultProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Probabilities of a random fault per request (at most one per request), for ``targets``.

    ``server_error`` picks 500, 502 or 503 evenly. A request that draws no fault gets an extra
    latency uniform in ``[0, latency_jitter_s]``.
    """

    throttle: float = 0.0
    unauthorized: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    reset: float = 0.0
    commit_then_lose: float = 0.0
    latency_jitter_s: float = 0.0
    targets: frozenset[FaultTarget] = frozenset(
        {FaultTarget.RECORD, FaultTarget.SUITEQL, FaultTarget.JOB, FaultTarget.TOKEN}
    )

    def __post_init__(self) -> None:
        probabilities = self.probabilities()
        if any(not (0.0 <= p <= 1.0) for _, p in probabilities):
            raise ValueError("fault probabilities must be within [0, 1]")
        if sum(p for _, p in probabilities) > 1.0:
            raise ValueError("fault probabilities must add up to at most 1")
        if not (math.isfinite(self.latency_jitter_s) and self.latency_jitter_s >= 0):
            raise ValueError("latency_jitter_s must be a finite number >= 0")

    def probabilities(self) -> tuple[tuple[FaultKind, float], ...]:
        return (
            (FaultKind.THROTTLE, self.throttle),
            (FaultKind.UNAUTHORIZED, self.unauthorized),
            (FaultKind.SERVER_ERROR, self.server_error),
            (FaultKind.TIMEOUT, self.timeout),
            (FaultKind.RESET, self.reset),
            (FaultKind.COMMIT_THEN_LOSE, self.commit_then_lose),
        )


class FaultPlan:
    """The script and the seeded profile; :meth:`draw` picks the fault of one request."""

    def __init__(
        self, *, seed: int = 0, profile: FaultProfile | None = None, max_script: int = 10_000
    ) -> None:
        if max_script < 1:
            raise ValueError("max_script must be >= 1")
        self.profile = profile or FaultProfile()
        self._rng = random.Random(seed)
        self._script: deque[Fault] = deque()
        self._max_script = max_script

    def script(self, *faults: Fault) -> None:
        """Queue one-shot faults; each is used by the next request its target matches."""
        if len(self._script) + len(faults) > self._max_script:
            raise ValueError(f"at most {self._max_script} scripted faults can be pending")
        self._script.extend(faults)

    def clear_script(self) -> None:
        self._script.clear()

    @property
    def scripted(self) -> tuple[Fault, ...]:
        """Faults still queued, next first."""
        return tuple(self._script)

    def draw(self, target: FaultTarget) -> Fault | None:
        """The fault for one request of kind ``target``, or None."""
        for index, fault in enumerate(self._script):
            if fault.target is FaultTarget.ANY or fault.target is target:
                del self._script[index]
                return fault
        if target not in self.profile.targets:
            return None
        return self._random_fault(target)

    def _random_fault(self, target: FaultTarget) -> Fault | None:
        profile = self.profile
        draw = self._rng.random()
        for kind, probability in profile.probabilities():
            if draw < probability:
                if kind is FaultKind.SERVER_ERROR:
                    return Fault.server_error(self._rng.choice(SERVER_ERROR_STATUSES), target)
                return Fault(kind=kind, target=target)
            draw -= probability
        if profile.latency_jitter_s > 0:
            return Fault.latency(self._rng.uniform(0.0, profile.latency_jitter_s), target)
        return None
