"""Asynchronous REST jobs and their idempotency keys (ref §2.1-§2.3).

Theory of operation
-------------------
A record request sent with ``Prefer: respond-async`` becomes a :class:`Job` of one
:class:`Task`; a batch (``{"items": [...]}`` with the collection content type) becomes a job of
one task per item. A task holds the *operation*: a closure that performs the synchronous request
and returns the :class:`Answer` that request would have got (204 + ``Location``, or an nsError).

When a job runs is the simulator's choice, made deterministic for tests: with ``polls = 0`` a
job runs as it is submitted (before the 202 is sent); with ``polls = N`` it stays ``pending`` for
the first N ``GET /async/v1/job/<id>`` and runs on the next one; :meth:`JobBook.run_pending`
runs every pending job at once. Tasks run in order, each on its own: one task failing does not
stop the others (batch items are independent, ref §2.3).

Idempotency (ref §2.2). A key (an RFC 4122 UUID, compared without case) is remembered with the
job it created and a fingerprint of the request (method, canonical path, canonical JSON body).
A second async request with the same key gets either Oracle's documented answer (``conflict``
mode: 400 "Conflict" ``IDEMPOTENCY_ERROR`` with ``Location`` of the first job) or, in ``accept``
mode, a 202 with the same ``Location`` again; no second job either way. The same key with a
*different* request is always 400 ``IDEMPOTENCY_ERROR`` without ``Location`` (the simulator's
choice: NetSuite does not document it, and following the first job would hand a client the
results of a request it did not send). Keys are ignored on synchronous requests.

Progress values: ``pending`` before a job runs; then a task is ``succeeded`` (its answer is
2xx) or ``failed``, and the job is ``succeeded`` when every task succeeded, else ``failed``
(only ``pending`` and ``succeeded`` are documented, ref §2.1: UNCERTAIN).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from edge.sim.netsuite.errors import NsError

__all__ = [
    "Answer",
    "Job",
    "JobBook",
    "Task",
    "fingerprint",
    "parse_idempotency_key",
]

IDEMPOTENCY_DETAIL: Final = (
    'A request with the same idempotency key is already submitted. See the "Location" header '
    "for a link to the previously submitted job"
)  # Oracle's wording (ref §2.2)

ReplayMode = Literal["conflict", "accept"]


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer as the pure core produces it; the shell turns it into bytes."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Operation = Callable[[float], Answer]


@dataclass(slots=True)
class Task:
    id: int
    operation: Operation = field(repr=False)
    answer: Answer | None = None
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def progress(self) -> str:
        if self.answer is None:
            return "pending"
        return "succeeded" if self.answer.ok else "failed"


@dataclass(slots=True)
class Job:
    id: int
    tasks: list[Task]
    submitted_at: float
    polls_left: int
    idempotency_key: str | None = None

    @property
    def completed(self) -> bool:
        return all(task.answer is not None for task in self.tasks)

    @property
    def progress(self) -> str:
        if not self.completed:
            return "pending"
        return "succeeded" if all(task.progress == "succeeded" for task in self.tasks) else "failed"

    def run(self, now: float) -> None:
        for task in self.tasks:
            if task.answer is None:
                task.started_at = now
                task.answer = task.operation(now)
                task.ended_at = now


def parse_idempotency_key(raw: str) -> str:
    """The key of an ``X-NetSuite-Idempotency-Key`` header: an RFC 4122 UUID, lower-cased."""
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        raise NsError(
            400,
            "INVALID_HEADER",
            "The X-NetSuite-Idempotency-Key header must be a UUID (RFC 4122).",
            header="X-NetSuite-Idempotency-Key",
        ) from None


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two submissions "the same request": method, path, JSON body up to layout."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
        payload = canonical.encode()
    except (ValueError, RecursionError):
        payload = body
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), payload):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class JobBook:
    """Every job, and the idempotency keys that point at them. No I/O, no clock."""

    def __init__(
        self,
        *,
        polls: int = 0,
        replay: ReplayMode = "conflict",
        key_capacity: int = 100_000,
    ) -> None:
        if polls < 0:
            raise ValueError("polls must be >= 0")
        if replay not in ("conflict", "accept"):
            raise ValueError("replay must be 'conflict' or 'accept'")
        self.polls = polls
        self.replay: ReplayMode = replay
        self.jobs: dict[int, Job] = {}
        self._keys: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._key_capacity = key_capacity
        self.replays = 0

    def lookup_key(self, key: str, request_fingerprint: str) -> Job | None:
        """The job an earlier request with ``key`` created, or None for a new key.

        Raises 400 IDEMPOTENCY_ERROR when the key was used for a different request.
        """
        entry = self._keys.get(key)
        if entry is None:
            return None
        earlier_fingerprint, job_id = entry
        if earlier_fingerprint != request_fingerprint:
            raise NsError(
                400,
                "IDEMPOTENCY_ERROR",
                f"The idempotency key {key} was already used for a different request; "
                "use a new key for a new request.",
                title="Conflict",
                type_uri="https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.10",
                header="X-NetSuite-Idempotency-Key",
            )
        self.replays += 1
        return self.jobs[job_id]

    def submit(
        self,
        operations: Sequence[Operation],
        now: float,
        *,
        key: str | None = None,
        request_fingerprint: str = "",
    ) -> Job:
        """Create a job of one task per operation; run it at once when ``polls == 0``."""
        job_id = len(self.jobs) + 1
        tasks = [Task(index, op) for index, op in enumerate(operations, start=1)]
        job = Job(job_id, tasks, now, self.polls, key)
        self.jobs[job_id] = job
        if key is not None:
            self._keys[key] = (request_fingerprint, job_id)
            while len(self._keys) > self._key_capacity:
                self._keys.popitem(last=False)
        if job.polls_left == 0:
            job.run(now)
        return job

    def poll(self, job_id: int, now: float) -> Job | None:
        """``GET /job/<id>``: count the poll, run the job when its polls are used up."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if not job.completed:
            if job.polls_left > 0:
                job.polls_left -= 1
            else:
                job.run(now)
        return job

    def run_pending(self, now: float) -> int:
        """Run every job that has not run yet; how many ran."""
        ran = 0
        for job in self.pending():
            job.run(now)
            ran += 1
        return ran

    def pending(self) -> Iterator[Job]:
        return (job for job in list(self.jobs.values()) if not job.completed)

    def conflict(self, job: Job, location: str) -> NsError:
        """Oracle's answer to a duplicate submission (ref §2.2)."""
        return NsError(
            400,
            "IDEMPOTENCY_ERROR",
            IDEMPOTENCY_DETAIL,
            title="Conflict",
            type_uri="https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.10",
            headers={"Location": location, "Preference-Applied": "respond-async"},
        )


def job_json(job: Job, base_url: str) -> dict[str, Any]:
    """``GET /async/v1/job/<id>`` (ref §2.1, Oracle's sample shape)."""
    href = f"{base_url}/async/v1/job/{job.id}"
    return {
        "links": [{"rel": "self", "href": href}],
        "completed": job.completed,
        "id": str(job.id),
        "progress": job.progress,
        "task": {"links": [{"rel": "self", "href": f"{href}/task"}]},
    }
