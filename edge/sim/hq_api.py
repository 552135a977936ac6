"""A simulated HQ HTTPS JSON API that receives the store's transactions as CloudEvents.

Theory of operation
-------------------
:class:`HqApiSimulator` is the cloud's state and its decisions, with no I/O: the ledger of
committed events (idempotent by event id), the Idempotency-Key store, the fault script and the
seeded random fault draw, the counters. :func:`make_hq_app` is the thin aiohttp shell around it
and :func:`run_hq_api` serves that app on a real TCP socket. A batch request goes through these
steps, in order; the first that answers ends it:

1. count the request; check the bearer token (401);
2. take a concurrency slot, or answer 429 ``CONCURRENCY_LIMIT_EXCEEDED`` when all are taken;
3. draw a fault (the FIFO script first, else the seeded random profile); a ``throttle`` fault
   answers 429, ``server_error`` 500/502/503, after the base latency (plus any latency fault);
   ``timeout`` never answers, ``reset`` aborts the connection with RST, after the same wait;
4. check Content-Type (415) and the Idempotency-Key header (400), read the body (413);
5. look the Idempotency-Key up: replay the stored answer, or 422 (see below);
6. parse and validate the whole batch (400/413): nothing is committed unless all of it is valid;
7. commit: each new, non-rejected event gets a record id; known ids answer as duplicates;
8. store the answer under the key; once the base latency (plus any latency fault) has passed
   since the request arrived (steps 4-8 are part of that service time), a
   ``commit_then_lose`` fault aborts the connection (the client never learns it succeeded),
   otherwise the answer is sent.

Steps 5 to 8 run without an ``await``: a client giving up (which cancels the handler, see
:func:`run_hq_api`) can never leave half a batch committed, and two requests with the same key
can never be processed at the same time (so the draft's 409 "request in progress" cannot occur).

Contract
--------
``POST /v1/events/batch``

Request headers:

- ``Authorization: Bearer <token>`` (RFC 6750 §2.1);
- ``Idempotency-Key: <key>``: 1-255 visible ASCII characters; a structured-field string in
  quotes is accepted too (draft-ietf-httpapi-idempotency-key-header);
- ``Content-Type: application/cloudevents-batch+json`` (CloudEvents JSON Event Format 1.0 §4,
  "JSON Batch Format").

Body: a JSON array of 1 to ``max_batch`` (default 100) CloudEvents 1.0 in JSON format, each an
object with, all required by this API:

- ``specversion``: ``"1.0"``; ``id``: non-empty string, at most 256 characters; ``source``:
  non-empty string (a URI-reference); ``type``: non-empty string (CloudEvents 1.0, "REQUIRED
  Attributes");
- ``time``: an RFC 3339 timestamp with offset (RFC 3339 §5.6);
- ``datacontenttype``: ``"application/json"``; ``data``: a JSON object (the transaction).

Other attributes (extensions) are kept and ignored. The body is UTF-8 JSON (RFC 8259 §8.1);
NaN and Infinity are refused.

200 answer, one result per event in request order::

    {"results": [
      {"id": "<event id>", "status": "accepted", "record_id": "rec-00000001", "duplicate": false},
      {"id": "<event id>", "status": "rejected",
       "error": {"code": "BUSINESS_RULE_VIOLATION", "message": "...", "details": {...}}}
    ]}

HQ is idempotent by event id: an id already committed answers ``accepted`` with the same
``record_id`` and ``"duplicate": true``, and is never recorded twice (also when it appears twice
in one batch). A rejected event is not committed; sent again, it is judged again.

Idempotency-Key (draft-ietf-httpapi-idempotency-key-header, "Error Scenarios"): the 200
answer is stored under the key with a SHA-256 fingerprint of the raw body (the last
``idempotency_capacity`` keys are kept). The same key with the same body replays the stored answer
byte for byte, with the header ``Idempotent-Replayed: true``. The same key with another body
answers 422 ``IDEMPOTENCY_KEY_REUSED``. Answers other than 200 are not stored, so a retry with the
same key after an error or a fault is processed afresh. A batch that was committed but whose answer
was lost (``commit_then_lose``) replays its original answer (``"duplicate": false``) under the
same key; under a new key each event answers as a duplicate. Either way: same ``record_id``, one
record.

Error answers have the body ``{"error": {"code": "...", "message": "...", "details": {...}}}``:

=====  ==============================  ===================================================
 400   MALFORMED_JSON                  body is not UTF-8 JSON
 400   INVALID_BATCH                   not an array, or an empty one
 400   INVALID_EVENT                   an event misses or breaks a field; details: index,
                                       field, reason
 400   MISSING_IDEMPOTENCY_KEY,        no or unusable Idempotency-Key header
       INVALID_IDEMPOTENCY_KEY
 401   UNAUTHORIZED                    no or wrong bearer token (with ``WWW-Authenticate``)
 413   BATCH_TOO_LARGE                 more than ``max_batch`` events; details: max_batch,
                                       received
 413   PAYLOAD_TOO_LARGE               body above ``max_body_bytes``
 415   UNSUPPORTED_MEDIA_TYPE          wrong Content-Type
 422   IDEMPOTENCY_KEY_REUSED          same key, different body
 429   RATE_LIMITED                    throttled (``Retry-After``: delay-seconds, RFC 9110
                                       §10.2.3)
 429   CONCURRENCY_LIMIT_EXCEEDED      more than ``max_concurrency`` requests in flight
                                       (``Retry-After``)
 500   INTERNAL_ERROR                  (fault)
 502   BAD_GATEWAY                     (fault)
 503   SERVICE_UNAVAILABLE             (fault, with ``Retry-After``)
=====  ==============================  ===================================================

``GET /v1/health`` answers 200 ``{"status": "ok"}``: no token, no faults, a cheap probe.

Simulator controls (demo and tests; no token, so bind to loopback):

- ``GET /_sim/stats``: counters, configuration and the theoretical capacity;
- ``GET /_sim/events?limit=N``: the last N (default 100) committed events, oldest first, with
  the total count;
- ``POST /_sim/faults`` with a JSON object, every member optional: ``script`` (a list of faults
  to append, e.g. ``{"kind": "throttle", "retry_after_s": 2}``), ``clear_script`` (bool, applied
  first), ``profile`` (random fault probabilities, see :class:`FaultProfile`), ``reject_ids``
  (replaces the set), ``latency_s``. Answers with the resulting controls.

Capacity: each batch request holds a concurrency slot for at least ``latency_s``, so the
simulator cannot accept more than ``max_concurrency * max_batch / latency_s`` events per second
(:attr:`HqApiSimulator.theoretical_events_per_s`); a benchmark compares its throughput with it.

Faults are consumed by batch requests only, one per request, after authentication and the
concurrency check. Random faults come from ``random.Random(seed)``: the same seed and the same
request order give the same faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import hashlib
import hmac
import json
import math
import random
import re
import socket
import struct
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, KeysView, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

import msgspec
from aiohttp import web

BATCH_PATH: Final = "/v1/events/batch"
HEALTH_PATH: Final = "/v1/health"
BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"
DEFAULT_TOKEN: Final = "sim-token"
MAX_EVENT_ID_LENGTH: Final = 256
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
REJECTION_CODE: Final = "BUSINESS_RULE_VIOLATION"

_JSON: Final = "application/json"
_SERVER_ERROR_CODES: Final[Mapping[int, str]] = {
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
}
# struct linger {l_onoff=1, l_linger=0}: close() sends RST instead of FIN (socket(7)).
_LINGER_RST: Final = struct.pack("ii", 1, 0)
# RFC 3339 §5.6 date-time: full-date "T" full-time, with a mandatory offset.
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))\Z"
)
_KEY_CHARS: Final = re.compile(r"[\x21-\x7e]+\Z")


# -- faults ------------------------------------------------------------------------------------


class FaultKind(enum.StrEnum):
    LATENCY = "latency"
    """Wait ``delay_s`` more, then serve normally."""
    THROTTLE = "throttle"
    """429 RATE_LIMITED with ``Retry-After: retry_after_s``."""
    SERVER_ERROR = "server_error"
    """``status`` (500, 502 or 503) with an error body."""
    TIMEOUT = "timeout"
    """Never answer: the request hangs until the client gives up or the server shuts down."""
    RESET = "reset"
    """Abort the connection with RST, without an answer and without committing."""
    COMMIT_THEN_LOSE = "commit_then_lose"
    """Commit the batch, then abort the connection: the client never sees the answer."""


class Fault(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One injected fault. Build with the class methods; the fields are also the JSON form."""

    kind: FaultKind
    status: int = 503
    retry_after_s: int = 1
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind is FaultKind.SERVER_ERROR and self.status not in _SERVER_ERROR_CODES:
            raise ValueError(f"server_error status must be one of {sorted(_SERVER_ERROR_CODES)}")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError("delay_s must be a finite number >= 0")

    @classmethod
    def latency(cls, delay_s: float) -> Fault:
        return cls(kind=FaultKind.LATENCY, delay_s=delay_s)

    @classmethod
    def throttle(cls, retry_after_s: int = 1) -> Fault:
        return cls(kind=FaultKind.THROTTLE, retry_after_s=retry_after_s)

    @classmethod
    def server_error(cls, status: int = 503, retry_after_s: int = 1) -> Fault:
        return cls(kind=FaultKind.SERVER_ERROR, status=status, retry_after_s=retry_after_s)

    @classmethod
    def timeout(cls) -> Fault:
        return cls(kind=FaultKind.TIMEOUT)

    @classmethod
    def reset(cls) -> Fault:
        return cls(kind=FaultKind.RESET)

    @classmethod
    def commit_then_lose(cls) -> Fault:
        return cls(kind=FaultKind.COMMIT_THEN_LOSE)


class FaultProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Probabilities of a random fault per batch request (at most one fault per request).

    ``server_error`` picks 500, 502 or 503 evenly. A request that draws no fault gets an extra
    latency uniform in ``[0, latency_jitter_s]``.
    """

    throttle: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    reset: float = 0.0
    commit_then_lose: float = 0.0
    latency_jitter_s: float = 0.0
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        probabilities = self._probabilities()
        if any(not (0.0 <= p <= 1.0) for _, p in probabilities):
            raise ValueError("fault probabilities must be within [0, 1]")
        if sum(p for _, p in probabilities) > 1.0:
            raise ValueError("fault probabilities must add up to at most 1")
        if not (math.isfinite(self.latency_jitter_s) and self.latency_jitter_s >= 0):
            raise ValueError("latency_jitter_s must be a finite number >= 0")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")

    def _probabilities(self) -> tuple[tuple[FaultKind, float], ...]:
        return (
            (FaultKind.THROTTLE, self.throttle),
            (FaultKind.SERVER_ERROR, self.server_error),
            (FaultKind.TIMEOUT, self.timeout),
            (FaultKind.RESET, self.reset),
            (FaultKind.COMMIT_THEN_LOSE, self.commit_then_lose),
        )


# -- the pure core -----------------------------------------------------------------------------


class BatchError(Exception):
    """A request HQ answers with an error status; carries that answer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


def parse_batch(body: bytes, *, max_batch: int) -> list[dict[str, Any]]:
    """The CloudEvents of a batch body, all valid, or :class:`BatchError` (400/413)."""
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BatchError(400, "MALFORMED_JSON", f"body is not UTF-8 JSON: {exc}") from None
    if not isinstance(document, list):
        raise BatchError(400, "INVALID_BATCH", "body must be a JSON array of CloudEvents")
    if not document:
        raise BatchError(400, "INVALID_BATCH", "a batch holds at least one event")
    if len(document) > max_batch:
        raise BatchError(
            413,
            "BATCH_TOO_LARGE",
            f"a batch holds at most {max_batch} events, this one {len(document)}",
            {"max_batch": max_batch, "received": len(document)},
        )
    for index, event in enumerate(document):
        problem = event_problem(event)
        if problem is not None:
            name, reason = problem
            raise BatchError(
                400,
                "INVALID_EVENT",
                f"event {index}: {name or 'event'} {reason}",
                {"index": index, "field": name, "reason": reason},
            )
    return document


def event_problem(event: object) -> tuple[str, str] | None:
    """``(field, reason)`` for the first thing wrong with one CloudEvent, or None."""
    if not isinstance(event, dict):
        return "", "must be a JSON object"
    if event.get("specversion") != "1.0":
        return "specversion", 'must be "1.0"'
    for name in ("id", "source", "type"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            return name, "must be a non-empty string"
    if len(event["id"]) > MAX_EVENT_ID_LENGTH:
        return "id", f"must be at most {MAX_EVENT_ID_LENGTH} characters"
    time = event.get("time")
    if not isinstance(time, str) or not is_rfc3339(time):
        return "time", "must be an RFC 3339 timestamp with an offset"
    if event.get("datacontenttype") != _JSON:
        return "datacontenttype", f'must be "{_JSON}"'
    if not isinstance(event.get("data"), dict):
        return "data", "must be a JSON object"
    return None


def is_rfc3339(text: str) -> bool:
    """True for an RFC 3339 §5.6 date-time with offset (leap second 60 allowed)."""
    match = _RFC3339.match(text)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        dt.datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    if second > 60:
        return False
    if match.group(9) is not None:
        return int(match.group(10)) <= 23 and int(match.group(11)) <= 59
    return True


def parse_idempotency_key(header: str | None) -> str:
    """The key of an ``Idempotency-Key`` header value, or :class:`BatchError` (400)."""
    if header is None or not header.strip():
        raise BatchError(400, "MISSING_IDEMPOTENCY_KEY", "the Idempotency-Key header is required")
    key = header.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]  # an RFC 8941 sf-string, as the draft's examples write it
    if not (0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH) or not _KEY_CHARS.match(key):
        raise BatchError(
            400,
            "INVALID_IDEMPOTENCY_KEY",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters",
        )
    return key


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    body: bytes


class Ledger(Mapping[str, dict[str, Any]]):
    """HQ's committed events, in commit order: event id -> the CloudEvent as received.

    Each event is kept as JSON bytes and decoded when read. Held as dicts, a ledger of 100,000
    sales made the simulator's own process stop for full garbage collections (22 of them in
    a 100,000-sale drain, 1.8 s in all, up to 0.34 s each) while its batches waited: HQ
    answered slower than its latency, and the bench charged that to the hub. Bytes are not
    tracked by the collector."""

    def __init__(self) -> None:
        self._events: dict[str, bytes] = {}

    def add(self, event_id: str, event: dict[str, Any]) -> None:
        try:
            encoded = msgspec.json.encode(event)
        except UnicodeEncodeError:  # a lone surrogate ("\\ud800"): valid JSON, not UTF-8
            encoded = json.dumps(event).encode()
        self._events[event_id] = encoded

    def __getitem__(self, event_id: str) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self._events[event_id])
        return event

    def __iter__(self) -> Iterator[str]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events

    def keys(self) -> KeysView[str]:
        return self._events.keys()


@dataclass(slots=True)
class HqStats:
    """Counters since the simulator was created."""

    requests: int = 0
    """Batch requests received (including those answered with an error or a fault)."""
    responses: Counter[int] = field(default_factory=Counter)
    """Answers sent, by HTTP status (aborted and hung requests have none)."""
    faults: Counter[str] = field(default_factory=Counter)
    """Faults injected, by kind."""
    events_received: int = 0
    """Events in valid batches that reached the ledger."""
    events_committed: int = 0
    events_duplicate: int = 0
    events_rejected: int = 0
    idempotent_replays: int = 0
    concurrency_rejections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    first_request_at: float | None = None
    """``time.perf_counter()`` when the first batch request arrived (benches time a drain
    from it, leaving the hub's start out)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "faults": dict(sorted(self.faults.items())),
            "events_received": self.events_received,
            "events_committed": self.events_committed,
            "events_duplicate": self.events_duplicate,
            "events_rejected": self.events_rejected,
            "idempotent_replays": self.idempotent_replays,
            "concurrency_rejections": self.concurrency_rejections,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


class HqApiSimulator:
    """HQ's state and decisions. No I/O and no clock: the aiohttp shell drives it.

    Public state, for tests and benchmarks to read (and ``reject_ids``, ``profile``,
    ``latency_s`` to change at any time):

    - ``committed``: event id -> the CloudEvent as received, in commit order;
    - ``reject_ids``: event ids that HQ's business rules refuse (not committed);
    - ``received_ids``: ids of the events of valid batches, in arrival order, duplicates
      included (the last ``history_limit``);
    - ``stats``: :class:`HqStats`.

    Memory: the ledger keeps every committed event (it is the thing under test); everything else
    is bounded (``history_limit``, ``idempotency_capacity``, ``max_script``).
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        max_batch: int = 100,
        max_concurrency: int = 8,
        latency_s: float = 0.0,
        seed: int = 0,
        profile: FaultProfile | None = None,
        reject_ids: Iterable[str] = (),
        retry_after_s: int = 1,
        max_body_bytes: int = 4 * 1024 * 1024,
        idempotency_capacity: int = 10_000,
        history_limit: int = 100_000,
        max_script: int = 10_000,
    ) -> None:
        if max_batch < 1 or max_concurrency < 1 or max_body_bytes < 1:
            raise ValueError("max_batch, max_concurrency and max_body_bytes must be >= 1")
        if idempotency_capacity < 1 or history_limit < 1 or max_script < 1:
            raise ValueError("idempotency_capacity, history_limit and max_script must be >= 1")
        if retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        self.token = token
        self.max_batch = max_batch
        self.max_concurrency = max_concurrency
        self.latency_s = latency_s
        self.profile = profile or FaultProfile()
        self.reject_ids: set[str] = set(reject_ids)
        self.retry_after_s = retry_after_s
        """Retry-After of the concurrency-limit answer."""
        self.max_body_bytes = max_body_bytes
        self.idempotency_capacity = idempotency_capacity

        self.committed = Ledger()
        self.received_ids: deque[str] = deque(maxlen=history_limit)
        self.stats = HqStats()
        self._record_ids: dict[str, str] = {}
        self._commit_counts: Counter[str] = Counter()
        self._received_counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._script: deque[Fault] = deque()
        self._max_script = max_script
        self._answers: OrderedDict[str, tuple[str, StoredAnswer]] = OrderedDict()

    # -- configuration ---------------------------------------------------------------------

    @property
    def latency_s(self) -> float:
        """Base service time of every batch request (a concurrency slot is held meanwhile)."""
        return self._latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"latency_s must be a finite number >= 0, not {value!r}")
        self._latency_s = float(value)

    @property
    def theoretical_events_per_s(self) -> float:
        """``max_concurrency * max_batch / latency_s``: the most HQ can accept (inf at 0 s)."""
        if self._latency_s == 0:
            return math.inf
        return self.max_concurrency * self.max_batch / self._latency_s

    # -- queries ---------------------------------------------------------------------------

    def commit_count(self, event_id: str) -> int:
        """How many records were created for ``event_id``: 0 or 1, never more."""
        return self._commit_counts[event_id]

    def received_count(self, event_id: str) -> int:
        """How many times ``event_id`` arrived in a valid batch (re-sends included)."""
        return self._received_counts[event_id]

    def record_id(self, event_id: str) -> str | None:
        return self._record_ids.get(event_id)

    # -- faults ----------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue one-shot faults, consumed in order by the next batch requests."""
        if len(self._script) + len(faults) > self._max_script:
            raise ValueError(f"at most {self._max_script} scripted faults can be pending")
        self._script.extend(faults)

    def clear_script(self) -> None:
        self._script.clear()

    @property
    def scripted_faults(self) -> tuple[Fault, ...]:
        """Faults still queued, next first."""
        return tuple(self._script)

    def draw_fault(self) -> Fault | None:
        """The fault for the next batch request: the script's next, else a random draw."""
        if self._script:
            fault: Fault | None = self._script.popleft()
        else:
            fault = self._random_fault()
        if fault is not None:
            self.stats.faults[fault.kind.value] += 1
        return fault

    def _random_fault(self) -> Fault | None:
        profile = self.profile
        draw = self._rng.random()
        for kind, probability in profile._probabilities():
            if draw < probability:
                if kind is FaultKind.THROTTLE:
                    return Fault.throttle(profile.retry_after_s)
                if kind is FaultKind.SERVER_ERROR:
                    status = self._rng.choice(sorted(_SERVER_ERROR_CODES))
                    return Fault.server_error(status, profile.retry_after_s)
                return Fault(kind=kind)
            draw -= probability
        if profile.latency_jitter_s > 0:
            return Fault.latency(self._rng.uniform(0.0, profile.latency_jitter_s))
        return None

    # -- request steps (called by the shell, in this order) --------------------------------

    def authorized(self, authorization: str | None) -> BatchError | None:
        """None if the Authorization header carries our bearer token, else the 401 answer."""
        challenge = 'Bearer realm="hq"'
        if authorization is None:
            return BatchError(
                401,
                "UNAUTHORIZED",
                "a bearer token is required",
                headers={"WWW-Authenticate": challenge},
            )
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self.token.encode()
        ):
            return None
        return BatchError(
            401,
            "UNAUTHORIZED",
            "the bearer token is not valid",
            headers={"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
        )

    def enter(self) -> BatchError | None:
        """Take a concurrency slot; the 429 answer if none is free. Pair with :meth:`leave`."""
        if self.stats.in_flight >= self.max_concurrency:
            self.stats.concurrency_rejections += 1
            return BatchError(
                429,
                "CONCURRENCY_LIMIT_EXCEEDED",
                f"at most {self.max_concurrency} requests may be in flight",
                {"max_concurrency": self.max_concurrency},
                {"Retry-After": str(self.retry_after_s)},
            )
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        return None

    def leave(self) -> None:
        self.stats.in_flight -= 1

    def stored_answer(self, key: str, body: bytes) -> StoredAnswer | None:
        """The answer stored under ``key`` for this same ``body``, None if there is none.

        Raises :class:`BatchError` 422 when ``key`` was used with another body.
        """
        stored = self._answers.get(key)
        if stored is None:
            return None
        fingerprint, answer = stored
        if fingerprint != _fingerprint(body):
            raise BatchError(
                422,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was used with a different request body",
            )
        self._answers.move_to_end(key)
        self.stats.idempotent_replays += 1
        return answer

    def store_answer(self, key: str, body: bytes, answer: StoredAnswer) -> None:
        """Keep ``answer`` for replays of ``key`` with ``body`` (the last N keys are kept)."""
        self._answers[key] = (_fingerprint(body), answer)
        self._answers.move_to_end(key)
        while len(self._answers) > self.idempotency_capacity:
            self._answers.popitem(last=False)

    def commit(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply a valid batch to the ledger; one result per event, in order."""
        results: list[dict[str, Any]] = []
        for event in events:
            event_id: str = event["id"]
            self.stats.events_received += 1
            self.received_ids.append(event_id)
            self._received_counts[event_id] += 1
            record_id = self._record_ids.get(event_id)
            if record_id is not None:
                self.stats.events_duplicate += 1
                results.append(_accepted(event_id, record_id, duplicate=True))
            elif event_id in self.reject_ids:
                self.stats.events_rejected += 1
                results.append(_rejected(event_id))
            else:
                record_id = f"rec-{len(self._record_ids) + 1:08d}"
                self._record_ids[event_id] = record_id
                self._commit_counts[event_id] += 1
                self.committed.add(event_id, event)
                self.stats.events_committed += 1
                results.append(_accepted(event_id, record_id, duplicate=False))
        return results

    # -- views for the control API ---------------------------------------------------------

    def controls(self) -> dict[str, Any]:
        return {
            "latency_s": self._latency_s,
            "profile": msgspec.to_builtins(self.profile),
            "script": [msgspec.to_builtins(f) for f in self._script],
            "reject_ids": sorted(self.reject_ids),
        }

    def snapshot(self) -> dict[str, Any]:
        capacity = self.theoretical_events_per_s
        return {
            "stats": self.stats.as_json(),
            "committed": len(self.committed),
            "config": {
                "max_batch": self.max_batch,
                "max_concurrency": self.max_concurrency,
                "max_body_bytes": self.max_body_bytes,
                "retry_after_s": self.retry_after_s,
            },
            "controls": self.controls(),
            "theoretical_events_per_s": None if math.isinf(capacity) else capacity,
        }


def _fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _accepted(event_id: str, record_id: str, *, duplicate: bool) -> dict[str, Any]:
    return {"id": event_id, "status": "accepted", "record_id": record_id, "duplicate": duplicate}


def _rejected(event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "status": "rejected",
        "error": {
            "code": REJECTION_CODE,
            "message": f"event {event_id} was refused by HQ business rules (simulated)",
            "details": {"event_id": event_id, "rule": "sim.reject_ids"},
        },
    }


# -- the aiohttp shell -------------------------------------------------------------------------


class _Runtime:
    """Event-loop state of one app: what hung requests wait on, and change notification."""

    def __init__(self) -> None:
        self.released = asyncio.Event()  # set at shutdown: hung requests end
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while True:
            changed = self._changed  # taken before the check, so no change is missed
            if predicate():
                return
            await changed.wait()


SIM_KEY: Final = web.AppKey("hq_sim", HqApiSimulator)
_RUNTIME_KEY: Final = web.AppKey("hq_sim_runtime", _Runtime)


def make_hq_app(sim: HqApiSimulator) -> web.Application:
    """The aiohttp application serving ``sim``.

    Serve it with ``handler_cancellation=True`` (as :func:`run_hq_api` does) so that a client
    giving up cancels its request, and a hung (``timeout``) request frees its concurrency slot.
    """
    app = web.Application(client_max_size=sim.max_body_bytes)
    app[SIM_KEY] = sim
    app[_RUNTIME_KEY] = _Runtime()
    # on_shutdown runs before aiohttp waits for in-flight handlers, so hung requests end at once
    # instead of holding shutdown for the whole shutdown_timeout.
    app.on_shutdown.append(_release_hung_requests)
    app.router.add_post(BATCH_PATH, _post_batch)
    app.router.add_get(HEALTH_PATH, _get_health)
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_get("/_sim/events", _get_events)
    app.router.add_post("/_sim/faults", _post_faults)
    return app


async def _release_hung_requests(app: web.Application) -> None:
    app[_RUNTIME_KEY].released.set()


def _answer(
    sim: HqApiSimulator,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    sim.stats.responses[status] += 1
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _error_answer(sim: HqApiSimulator, error: BatchError) -> web.Response:
    return _answer(sim, error.status, _dumps(error.body()), error.headers)


def _dumps(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _abort_with_rst(request: web.Request) -> web.Response:
    """Drop the connection with RST and no answer. The returned response is never sent."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()
    # aiohttp treats the failed write of this response as a client disconnection.
    return web.Response(status=500)


async def _post_batch(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    runtime = request.app[_RUNTIME_KEY]
    sim.stats.requests += 1
    if sim.stats.first_request_at is None:
        sim.stats.first_request_at = time.perf_counter()
    refusal = sim.authorized(request.headers.get("Authorization")) or sim.enter()
    if refusal is not None:
        return _error_answer(sim, refusal)
    runtime.notify()
    try:
        return await _serve_batch(request, sim, runtime)
    except BatchError as error:
        return _error_answer(sim, error)
    finally:
        sim.leave()
        runtime.notify()


async def _serve_batch(
    request: web.Request, sim: HqApiSimulator, runtime: _Runtime
) -> web.Response:
    # Step 3: faults, in front of the application as a gateway or a sick server would be.
    fault = sim.draw_fault()
    delay = sim.latency_s
    if fault is not None and fault.kind is FaultKind.LATENCY:
        delay += fault.delay_s
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay
    if fault is not None and fault.kind in _GATEWAY_FAULTS:
        if delay > 0:
            await asyncio.sleep(delay)
        if fault.kind is FaultKind.THROTTLE:
            raise BatchError(
                429,
                "RATE_LIMITED",
                "too many requests (simulated)",
                headers={"Retry-After": str(fault.retry_after_s)},
            )
        if fault.kind is FaultKind.SERVER_ERROR:
            headers = {"Retry-After": str(fault.retry_after_s)} if fault.status == 503 else {}
            raise BatchError(
                fault.status,
                _SERVER_ERROR_CODES[fault.status],
                "HQ failed (simulated)",
                headers=headers,
            )
        if fault.kind is FaultKind.TIMEOUT:
            await runtime.released.wait()  # only set at shutdown
            return _abort_with_rst(request)
        return _abort_with_rst(request)  # RESET

    # Steps 4-8; the latency is the whole service time, this work included (the bench's
    # limit, concurrency x batch / latency, assumes so).
    try:
        answer = await _apply_batch(request, sim, runtime)
    except BatchError:
        await _sleep_until(loop, deadline)
        raise
    await _sleep_until(loop, deadline)
    if fault is not None and fault.kind is FaultKind.COMMIT_THEN_LOSE:
        return _abort_with_rst(request)
    return answer


_GATEWAY_FAULTS: Final = frozenset(
    {FaultKind.THROTTLE, FaultKind.SERVER_ERROR, FaultKind.TIMEOUT, FaultKind.RESET}
)


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    remaining = deadline - loop.time()
    if remaining > 0:
        await asyncio.sleep(remaining)


async def _apply_batch(
    request: web.Request, sim: HqApiSimulator, runtime: _Runtime
) -> web.Response:
    """Steps 4-8: the answer to send (the batch is committed), or raise BatchError."""
    # Step 4: the request's form.
    if request.content_type != BATCH_CONTENT_TYPE:
        raise BatchError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"Content-Type must be {BATCH_CONTENT_TYPE}, not {request.content_type}",
        )
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BatchError(
            413,
            "PAYLOAD_TOO_LARGE",
            f"the body is larger than {sim.max_body_bytes} bytes",
            {"max_body_bytes": sim.max_body_bytes},
        ) from None

    # Steps 5-8, with no await from the key lookup to storing the answer (see the docstring).
    stored = sim.stored_answer(key, body)
    if stored is not None:
        return _answer(sim, stored.status, stored.body, {"Idempotent-Replayed": "true"})
    events = parse_batch(body, max_batch=sim.max_batch)
    answer = StoredAnswer(200, _dumps({"results": sim.commit(events)}))
    sim.store_answer(key, body, answer)
    runtime.notify()
    return _answer(sim, answer.status, answer.body)


async def _get_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].snapshot())


async def _get_events(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = -1
    if not 0 <= limit <= 100_000:
        error = BatchError(400, "INVALID_QUERY", "limit must be an integer in 0..100000")
        return web.json_response(error.body(), status=400)
    skip = max(0, len(sim.committed) - limit)
    events = [
        {"id": event_id, "record_id": sim.record_id(event_id), "event": sim.committed[event_id]}
        for event_id in islice(sim.committed, skip, None)  # only the last `limit` decoded
    ]
    return web.json_response({"count": len(sim.committed), "events": events})


class _FaultControls(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    script: list[Fault] = []
    clear_script: bool = False
    profile: FaultProfile | None = None
    reject_ids: list[str] | None = None
    latency_s: float | None = None


async def _post_faults(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    try:
        controls = msgspec.json.decode(await request.read(), type=_FaultControls)
        if controls.latency_s is not None:
            sim.latency_s = controls.latency_s  # validates before anything else changes
        if controls.clear_script:
            sim.clear_script()
        sim.script(*controls.script)
    except (msgspec.DecodeError, ValueError) as exc:
        error = BatchError(400, "INVALID_CONTROLS", str(exc))
        return web.json_response(error.body(), status=400)
    if controls.profile is not None:
        sim.profile = controls.profile
    if controls.reject_ids is not None:
        sim.reject_ids = set(controls.reject_ids)
    return web.json_response(sim.controls())


# -- running it --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HqApiServer:
    """A running simulator: where it listens, its state, and a way to wait on that state."""

    url: str
    """Base URL, e.g. ``http://127.0.0.1:41234`` (the connector appends ``/v1/...``)."""
    host: str
    port: int
    sim: HqApiSimulator
    _runtime: _Runtime

    async def wait_until(self, predicate: Callable[[HqApiSimulator], bool]) -> None:
        """Return once ``predicate(sim)`` holds; re-checked after every request step.

        Wrap in ``asyncio.timeout``: this waits as long as it takes.
        """
        await self._runtime.wait_until(lambda: predicate(self.sim))


@contextlib.asynccontextmanager
async def run_hq_api(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sim: HqApiSimulator | None = None,
    shutdown_timeout_s: float = 2.0,
) -> AsyncIterator[HqApiServer]:
    """Serve a simulator on ``host:port`` (0: an ephemeral port) until the block ends.

    ``handler_cancellation=True``: when a client closes its connection (a client-side timeout,
    say), its handler is cancelled as a real server would stop working for it; without it a hung
    request would hold its concurrency slot until shutdown.
    """
    sim = sim if sim is not None else HqApiSimulator()
    app = make_hq_app(sim)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout_s
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        netloc = f"[{host}]" if ":" in host else host
        yield HqApiServer(f"http://{netloc}:{bound_port}", host, bound_port, sim, app[_RUNTIME_KEY])
    finally:
        await runner.cleanup()
