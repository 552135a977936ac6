"""The NetSuite-shaped HTTP service: the simulator's pure parts served over real HTTP.

Theory of operation
-------------------
:class:`NetSuiteSim` holds the state: the item :class:`~edge.sim.netsuite.catalogue.Catalogue`,
the :class:`~edge.sim.netsuite.records.RecordStore` (records, external ids, the exactly-once
ledger), the :class:`~edge.sim.netsuite.auth.Authenticator` (TBA signatures recomputed from the
request as received; OAuth 2.0 assertions verified with the mapped public key), the
:class:`~edge.sim.netsuite.jobs.JobBook` of asynchronous jobs, the
:class:`~edge.sim.netsuite.faults.FaultPlan` and the SuiteQL tables. :func:`make_app` is the
aiohttp shell; :func:`run_netsuite_sim` serves it on an ephemeral loopback port. Every request
under ``/services/rest`` goes through, in order:

1. governance: with ``concurrency`` requests already in flight the request is refused at once,
   429 in nsError shape (code ``CONCURRENCY_LIMIT_EXCEEDED``; the real body is UNCERTAIN, ref
   §6) or, with ``over_limit_status = 401``, the 401 INVALID_LOGIN that NetSuite gives under
   load (ref §6). An admitted request holds its slot until it is answered;
2. one fault (:mod:`~edge.sim.netsuite.faults`; the script first, then the seeded profile), after
   the base ``latency_s``: ``throttle`` 429, ``unauthorized`` 401 INVALID_LOGIN, ``server_error``
   500/502/503, ``timeout`` never answers (until shutdown), ``reset`` aborts the connection with
   RST; these touch no state. ``commit_then_lose`` serves the request, then aborts;
3. authentication (not for the token endpoint): 401 INVALID_LOGIN, cause in ``auth.failures``;
4. the operation; a refusal is an nsError body with ``o:errorDetails`` (ref §3). Steps 3-4
   are part of ``latency_s`` (plus a latency fault): the answer leaves when that much time has
   passed since the request arrived, not that much after the work.

Routes (under ``/services/rest``)
---------------------------------
- ``POST record/v1/{type}``: create; 204 + ``Location: <base>/record/v1/{type}/{id}`` (ref §1.3);
- ``GET|PUT|PATCH|DELETE record/v1/{type}/{ref}``, ``ref`` an internal id or ``eid:<external
  id>`` (case-insensitive); PUT is the upsert and takes ``eid:`` only (ref §1.5); PUT and PATCH
  answer 204 + ``Location``, DELETE 204; GET takes ``expandSubResources=true``;
- ``POST record/v1/{type}/{ref}/!transform/{target}``: 204 + ``Location`` of the new record;
- any record request with ``Prefer: respond-async`` becomes a job (ref §2.1): 202,
  ``Preference-Applied: respond-async``, ``Location: /services/rest/async/v1/job/{id}`` (a path,
  as Oracle's example prints it). ``X-NetSuite-Idempotency-Key`` (a UUID) is honoured on async
  requests only (ref §2.2): the same key again answers Oracle's 400 "Conflict"
  ``IDEMPOTENCY_ERROR`` with the first job's ``Location`` (``job_replay="accept"``: 202 with it);
- batches (ref §2.3), async only: ``Content-Type: application/vnd.oracle.resource+json;
  type=collection`` with ``{"items": [...]}`` (1..100) on ``POST`` (create), ``PUT`` (upsert,
  each item's ``externalId``) or ``PATCH`` (update, ``id`` else ``externalId``) of
  ``record/v1/{type}``, and ``DELETE record/v1/{type}?ids=1,eid:X``; one task per item
  (``batches=False``: an account without the feature, 405 ``INVALID_METHOD``, the simulator's
  guess at what such an account answers);
- ``GET async/v1/job/{id}`` (each poll may run the job, see ``job_polls``), ``.../task``,
  ``.../task/{n}`` and ``.../task/{n}/result``. The result's body is undocumented (ref §2.1); the
  simulator answers what the synchronous request would have got (204 + ``Location``, or the
  nsError with its status);
- ``POST query/v1/suiteql?limit=&offset=`` with ``Prefer: transient`` and ``{"q": ...}``: a page
  of rows with ``count``, ``hasMore``, ``offset``, ``totalResults`` and links ``self``,
  ``first``, ``last``, ``previous``/``next`` where they exist (ref §4.2);
- ``POST auth/oauth2/v1/token``: client credentials with a JWT assertion (ref §5.2).

Not served: record listing (``GET record/v1/{type}``), attach/detach, ``system/v1``.

A control API without authentication or governance is under ``/_sim`` for tools that do not
share the process: ``GET /_sim/ledger`` and ``POST /_sim/faults`` (see :class:`FaultControls`).
In-process tests use the Python methods of :class:`NetSuiteSim` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from aiohttp import web

from edge.sim.netsuite.auth import Authenticator, OAuth2Client, TbaCredential
from edge.sim.netsuite.catalogue import Catalogue
from edge.sim.netsuite.errors import ERROR_CONTENT_TYPE, NsError, OAuthError, invalid_login
from edge.sim.netsuite.faults import Fault, FaultKind, FaultPlan, FaultProfile, FaultTarget
from edge.sim.netsuite.jobs import (
    Answer,
    Job,
    JobBook,
    Operation,
    ReplayMode,
    fingerprint,
    job_json,
    parse_idempotency_key,
)
from edge.sim.netsuite.records import (
    RecordStore,
    Rejection,
    StoredRecord,
    canonical_type,
    iso_utc,
    not_found,
)
from edge.sim.netsuite.suiteql import check_paging, execute
from edge.sim.netsuite.tables import tables_for

__all__ = [
    "PREFIX",
    "FaultControls",
    "NetSuiteServer",
    "NetSuiteSim",
    "make_app",
    "run_netsuite_sim",
]

PREFIX: Final = "/services/rest"
COLLECTION_TYPE: Final = "application/vnd.oracle.resource+json; type=collection"
MAX_BATCH: Final = 100
# struct linger {l_onoff=1, l_linger=0}: close() sends RST instead of FIN (socket(7)).
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_STATUS_FAULTS: Final[Mapping[int, Callable[[], Fault]]] = {
    429: Fault.throttle,
    401: Fault.unauthorized,
    500: lambda: Fault.server_error(500),
    502: lambda: Fault.server_error(502),
    503: lambda: Fault.server_error(503),
}


class NetSuiteSim:
    """The simulated account. Every knob is a plain attribute or method; see the module doc."""

    def __init__(
        self,
        account_id: str = "1234567",
        *,
        catalogue_size: int = 500,
        catalogue: Catalogue | None = None,
        tba: Iterable[TbaCredential] = (),
        oauth2: Iterable[OAuth2Client] = (),
        token_lifetime_s: int = 3600,
        concurrency: int = 5,
        over_limit_status: int = 429,
        latency_s: float = 0.0,
        faults: FaultPlan | None = None,
        locations: Iterable[int] | None = None,
        payment_methods: Iterable[int] | None = None,
        job_polls: int = 0,
        job_replay: ReplayMode = "conflict",
        batches: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if over_limit_status not in (401, 429):
            raise ValueError("over_limit_status must be 429 or 401")
        self.account_id = account_id
        self.clock = clock
        """The simulator's time (epoch seconds): TBA timestamps, token expiry, record dates."""
        self.catalogue = catalogue if catalogue is not None else Catalogue(catalogue_size)
        self.records = RecordStore(
            self.catalogue, locations=locations, payment_methods=payment_methods, now=clock()
        )
        self.auth = Authenticator(
            account_id, tba=tba, oauth2=oauth2, token_lifetime_s=token_lifetime_s
        )
        self.jobs = JobBook(polls=job_polls, replay=job_replay)
        self.batches = batches
        """False: an account without the batch feature (ref §0.3): batch requests answer 405."""
        self.faults = faults if faults is not None else FaultPlan()
        self.tables = tables_for(self.catalogue, self.records)
        self.concurrency = concurrency
        self.over_limit_status = over_limit_status
        self.latency_s = latency_s
        """Service time of every request (its concurrency slot is held meanwhile)."""
        self.inflight = 0
        self.peak_inflight = 0
        self.requests = 0
        self.first_request_at: float | None = None
        """``time.perf_counter()`` of the first API request (benches time from it)."""
        self.refused_over_limit = 0
        self.responses: Counter[int] = Counter()
        """Answers sent, by status (hung and aborted requests have none)."""

    # -- seeding -------------------------------------------------------------------------------

    def add_customer(
        self,
        company_name: str | None = None,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        email: str | None = None,
        external_id: str | None = None,
        **fields: Any,
    ) -> int:
        """Create a customer as if through the UI; its internal id. A person without a company
        name needs ``first_name`` and ``last_name``."""
        body: dict[str, Any] = dict(fields)
        if company_name is not None:
            body["companyName"] = company_name
        else:
            body |= {"isPerson": True, "firstName": first_name, "lastName": last_name}
        if email is not None:
            body["email"] = email
        if external_id is not None:
            body["externalId"] = external_id
        return self.records.create("customer", body, self.clock()).id

    def walk_in_customer_id(self) -> str:
        """The customer seeded at start ("Walk-in Customer")."""
        return str(self.records.records("customer")[0].id)

    def active_item_ids(self, count: int) -> list[int]:
        """The first ``count`` active item ids of the catalogue."""
        found: list[int] = []
        for item_id in self.catalogue.live_ids():
            if self.catalogue.is_active(item_id):
                found.append(item_id)
                if len(found) == count:
                    break
        return found

    # -- faults --------------------------------------------------------------------------------

    def script(self, *faults: Fault | int) -> None:
        """Queue one-shot faults; an int is shorthand: 429, 401 (the quirk), 500, 502, 503."""
        queued: list[Fault] = []
        for fault in faults:
            if isinstance(fault, Fault):
                queued.append(fault)
            elif fault in _STATUS_FAULTS:
                queued.append(_STATUS_FAULTS[fault]())
            else:
                raise ValueError(f"no fault answers {fault}; use {sorted(_STATUS_FAULTS)}")
        self.faults.script(*queued)

    def reject(
        self,
        external_id: str,
        *,
        status: int = 400,
        code: str = "USER_ERROR",
        detail: str = "The record was refused by a business rule (simulated).",
    ) -> None:
        """Refuse every write of ``external_id`` (any case, any type) with this nsError."""
        if not 400 <= status < 500:
            raise ValueError("a rejection is a 4xx")
        self.records.rejections[external_id.lower()] = Rejection(status, code, detail)

    def accept(self, external_id: str) -> None:
        """Undo :meth:`reject`."""
        self.records.rejections.pop(external_id.lower(), None)

    # -- the exactly-once ledger ---------------------------------------------------------------

    def count(self, record_type: str, external_id: str) -> int:
        """How many records of the type were ever created under the external id (any case)."""
        return self.records.create_count(external_id, record_type)

    def record(self, record_type: str, external_id: str) -> StoredRecord | None:
        """The record of the type that holds the external id now, if any."""
        return self.records.find(record_type, external_id=external_id)

    def ledger(self) -> dict[tuple[str, str], int]:
        """(type, lower-cased external id) -> records ever created."""
        return dict(self.records.create_counts)

    def duplicates(self) -> dict[tuple[str, str], int]:
        """The ledger's entries created more than once: empty when nothing was posted twice."""
        return {key: n for key, n in self.records.create_counts.items() if n > 1}


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


SIM: Final = web.AppKey("netsuite_sim", NetSuiteSim)
_RUNTIME: Final = web.AppKey("netsuite_sim_runtime", _Runtime)


# -- answers -----------------------------------------------------------------------------------


def _error_answer(error: NsError) -> Answer:
    return Answer(
        error.status, json.dumps(error.body()).encode(), ERROR_CONTENT_TYPE, error.headers
    )


def _response(sim: NetSuiteSim, answer: Answer) -> web.Response:
    sim.responses[answer.status] += 1
    return web.Response(
        status=answer.status,
        body=answer.body or None,
        headers={
            **answer.headers,
            **({"Content-Type": answer.content_type} if answer.content_type else {}),
        },
    )


def _json(sim: NetSuiteSim, document: object, status: int = 200) -> web.Response:
    sim.responses[status] += 1
    return web.json_response(document, status=status)


def _abort_with_rst(request: web.Request) -> web.Response:
    """Drop the connection with RST and no answer. The returned response is never sent."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()
    return web.Response(status=500)


# -- governance, faults, authentication ------------------------------------------------------


def _target(path: str) -> FaultTarget:
    rest = path.removeprefix(PREFIX)
    if rest.startswith("/record/"):
        return FaultTarget.RECORD
    if rest.startswith("/query/"):
        return FaultTarget.SUITEQL
    if rest.startswith("/async/"):
        return FaultTarget.JOB
    if rest.startswith("/auth/oauth2/"):
        return FaultTarget.TOKEN
    return FaultTarget.OTHER


@web.middleware
async def _governance(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not request.path.startswith(f"{PREFIX}/"):
        return await handler(request)
    sim = request.app[SIM]
    sim.requests += 1
    if sim.first_request_at is None:
        sim.first_request_at = time.perf_counter()
    if sim.inflight >= sim.concurrency:
        sim.refused_over_limit += 1
        if sim.over_limit_status == 401:
            return _response(sim, _error_answer(invalid_login()))
        refusal = NsError(
            429,
            "CONCURRENCY_LIMIT_EXCEEDED",
            f"Concurrent request limit exceeded: at most {sim.concurrency} requests at a time.",
        )
        return _response(sim, _error_answer(refusal))
    sim.inflight += 1
    sim.peak_inflight = max(sim.peak_inflight, sim.inflight)
    runtime = request.app[_RUNTIME]
    runtime.notify()
    try:
        target = _target(request.path)
        fault = sim.faults.draw(target)
        delay = sim.latency_s + (
            fault.delay_s if fault is not None and fault.kind is FaultKind.LATENCY else 0.0
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        if fault is not None and fault.kind not in _SERVED_FAULTS:
            if delay > 0:
                await asyncio.sleep(delay)
            refused = await _strike(request, fault)
            if refused is not None:
                return refused
        # The latency is the whole service time, the work included (the account's limit,
        # concurrency / latency, assumes so): serve, then answer at the deadline.
        try:
            if target is not FaultTarget.TOKEN:
                sim.auth.check(
                    request.method,
                    str(request.url),
                    request.headers.get("Authorization"),
                    sim.clock(),
                )
            response = await handler(request)
        except NsError:
            await _sleep_until(loop, deadline)
            raise
        await _sleep_until(loop, deadline)
        if fault is not None and fault.kind is FaultKind.COMMIT_THEN_LOSE:
            return _abort_with_rst(request)
        return response
    except NsError as error:
        return _response(sim, _error_answer(error))
    finally:
        sim.inflight -= 1
        runtime.notify()


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    if (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(remaining)


# Faults that let the request be served (late, or with its answer lost).
_SERVED_FAULTS: Final = frozenset({FaultKind.LATENCY, FaultKind.COMMIT_THEN_LOSE})


async def _strike(request: web.Request, fault: Fault) -> web.Response | None:
    """The answer a fault gives instead of the service, or None to serve the request."""
    sim = request.app[SIM]
    if fault.kind is FaultKind.THROTTLE:
        headers = {} if fault.retry_after_s is None else {"Retry-After": str(fault.retry_after_s)}
        error = NsError(
            429, "CONCURRENCY_LIMIT_EXCEEDED", "Too many requests (simulated).", headers=headers
        )
        return _response(sim, _error_answer(error))
    if fault.kind is FaultKind.UNAUTHORIZED:
        return _response(sim, _error_answer(invalid_login()))
    if fault.kind is FaultKind.SERVER_ERROR:
        error = NsError(fault.status, "UNEXPECTED_ERROR", "An unexpected error occurred.")
        return _response(sim, _error_answer(error))
    if fault.kind is FaultKind.TIMEOUT:
        await request.app[_RUNTIME].released.wait()  # set at shutdown only
        return _abort_with_rst(request)
    if fault.kind is FaultKind.RESET:
        return _abort_with_rst(request)
    return None


# -- the record service ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RecordCall:
    """One synchronous record operation, as a task of a job can replay it."""

    method: str
    record_type: str
    ref: str | None
    target: str | None
    body: Mapping[str, Any]
    expand: bool
    base: str
    """``<origin>/services/rest``."""


def _perform(sim: NetSuiteSim, call: _RecordCall, now: float) -> Answer:
    """Run one record operation on the store; its answer. No I/O, no await."""
    try:
        return _operate(sim.records, call, now)
    except NsError as error:
        return _error_answer(error)


def _location(call: _RecordCall, record: StoredRecord) -> dict[str, str]:
    return {"Location": f"{call.base}/record/v1/{record.record_type}/{record.id}"}


def _operate(store: RecordStore, call: _RecordCall, now: float) -> Answer:
    rtype, ref, method = call.record_type, call.ref, call.method
    if call.target is not None:
        if ref is None or method != "POST":
            raise NsError(405, "INVALID_METHOD", "A transform is a POST.")
        target = canonical_type(call.target)
        if target is None:
            raise _unknown_type(call.target)
        record = store.transform(rtype, ref, target, call.body, now)
        return Answer(204, headers=_location(call, record))
    if ref is None:
        if method != "POST":
            raise NsError(405, "INVALID_METHOD", f"{method} needs a record id.")
        record = store.create(rtype, call.body, now)
        return Answer(204, headers=_location(call, record))
    if method == "GET":
        record = store.get(rtype, ref)
        body = json.dumps(store.render(record, call.base, expand=call.expand)).encode()
        return Answer(200, body, "application/vnd.oracle.resource+json; type=singular-resource")
    if method == "PUT":
        if ref[:4].lower() != "eid:":
            raise NsError(
                400, "INVALID_PARAMETER", "Upsert (PUT) supports only external IDs (eid:...)."
            )
        record, _ = store.upsert(rtype, ref[4:], call.body, now)
        return Answer(204, headers=_location(call, record))
    if method == "PATCH":
        record = store.update(rtype, ref, call.body, now)
        return Answer(204, headers=_location(call, record))
    if method == "DELETE":
        store.delete(rtype, ref)
        return Answer(204)
    raise NsError(405, "INVALID_METHOD", f"{method} is not supported here.")


def _unknown_type(name: str) -> NsError:
    return NsError(400, "INVALID_PARAMETER", f"Record type '{name}' does not exist.")


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise NsError(400, "INVALID_CONTENT", "The request body is not valid JSON.") from None


def _object(value: Any, path: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise NsError(400, "INVALID_CONTENT", "The request body must be a JSON object.", path=path)
    return value


def _batch_calls(request: web.Request, rtype: str, raw: bytes, base: str) -> list[_RecordCall]:
    """The tasks of a batch request (ref §2.3)."""
    method = request.method
    if method == "DELETE":
        ids = request.query.get("ids", "")
        refs = [ref for ref in ids.split(",") if ref]
        if not refs:
            raise NsError(400, "INVALID_PARAMETER", "ids is required.", query_param="ids")
        if len(refs) > MAX_BATCH:
            raise NsError(400, "INVALID_PARAMETER", f"At most {MAX_BATCH} ids.", query_param="ids")
        return [_RecordCall("DELETE", rtype, ref, None, {}, False, base) for ref in refs]
    items = _object(_parse_json(raw)).get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise NsError(
            400, "INVALID_CONTENT", f'A batch is {{"items": [...]}} of 1 to {MAX_BATCH} records.'
        )
    calls: list[_RecordCall] = []
    for index, item in enumerate(items):
        body = _object(item, f"items[{index}]")
        ref: str | None = None
        if method == "PATCH" and body.get("id") is not None:
            ref = str(body["id"])  # the internal id wins over the external id (ref §2.3)
        elif method in ("PUT", "PATCH"):
            external = body.get("externalId")
            if not isinstance(external, str):
                raise NsError(
                    400,
                    "INVALID_CONTENT",
                    "Each item of an upsert batch needs its externalId.",
                    path=f"items[{index}].externalId",
                )
            ref = f"eid:{external}"
        elif method != "POST":
            raise NsError(405, "INVALID_METHOD", f"{method} is not a batch operation.")
        body = {k: v for k, v in body.items() if k != "id"}
        calls.append(_RecordCall(method, rtype, ref, None, body, False, base))
    return calls


async def _record(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    base = f"{request.url.origin()}{PREFIX}"
    segments = request.match_info["tail"].split("/")
    rtype = canonical_type(segments[0])
    if rtype is None:
        raise _unknown_type(segments[0])
    raw = await request.read()
    is_async = "respond-async" in request.headers.get("Prefer", "").lower()
    is_batch = "type=collection" in request.headers.get("Content-Type", "").replace(" ", "")
    if len(segments) == 1 and (is_batch or request.method in ("PUT", "PATCH", "DELETE")):
        if not sim.batches:
            raise NsError(
                405, "INVALID_METHOD", "Batch requests are not supported for this account."
            )
        if not is_async:
            raise NsError(
                400,
                "INVALID_HEADER",
                "A batch request needs Prefer: respond-async.",
                header="Prefer",
            )
        calls = _batch_calls(request, rtype, raw, base)
    else:
        if len(segments) == 2:
            ref, target = segments[1], None
        elif len(segments) == 4 and segments[2] == "!transform":
            ref, target = segments[1], segments[3]
        elif len(segments) == 1:
            ref, target = None, None
        else:
            raise not_found("No such resource.")
        body = _object(_parse_json(raw)) if request.method in ("POST", "PUT", "PATCH") else {}
        expand = request.query.get("expandSubResources", "").lower() == "true"
        calls = [_RecordCall(request.method, rtype, ref, target, body, expand, base)]
    if not is_async:
        return _response(sim, _perform(sim, calls[0], sim.clock()))
    return _submit(request, calls, raw)


def _job_location(job: Job) -> str:
    return f"{PREFIX}/async/v1/job/{job.id}"


def _submit(request: web.Request, calls: list[_RecordCall], raw: bytes) -> web.Response:
    sim = request.app[SIM]
    raw_key = request.headers.get("X-NetSuite-Idempotency-Key")
    key = None if raw_key is None else parse_idempotency_key(raw_key)
    print_ = fingerprint(request.method, request.path_qs, raw)
    accepted = {"Preference-Applied": "respond-async"}
    if key is not None:
        earlier = sim.jobs.lookup_key(key, print_)
        if earlier is not None:
            if sim.jobs.replay == "conflict":
                raise sim.jobs.conflict(earlier, _job_location(earlier))
            return _response(
                sim, Answer(202, headers=accepted | {"Location": _job_location(earlier)})
            )

    def operation(call: _RecordCall) -> Operation:
        return lambda now: _perform(sim, call, now)

    job = sim.jobs.submit(
        [operation(call) for call in calls], sim.clock(), key=key, request_fingerprint=print_
    )
    return _response(sim, Answer(202, headers=accepted | {"Location": _job_location(job)}))


# -- asynchronous jobs -----------------------------------------------------------------------


def _job(sim: NetSuiteSim, raw_id: str) -> Job:
    job = sim.jobs.jobs.get(int(raw_id)) if raw_id.isdigit() else None
    if job is None:
        raise not_found("The job does not exist.")
    return job


async def _get_job(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    raw_id = request.match_info["job"]
    _job(sim, raw_id)
    job = sim.jobs.poll(int(raw_id), sim.clock())
    assert job is not None
    return _json(sim, job_json(job, f"{request.url.origin()}{PREFIX}"))


async def _get_tasks(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    job = _job(sim, request.match_info["job"])
    href = f"{request.url.origin()}{PREFIX}/async/v1/job/{job.id}/task"
    items = [{"links": [{"rel": "self", "href": f"{href}/{task.id}"}]} for task in job.tasks]
    return _json(
        sim,
        {
            "links": [{"rel": "self", "href": href}],
            "count": len(items),
            "hasMore": False,
            "items": items,
            "offset": 0,
            "totalResults": len(items),
        },
    )


async def _get_task(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    job = _job(sim, request.match_info["job"])
    raw_task = request.match_info["task"]
    if not raw_task.isdigit() or not 1 <= int(raw_task) <= len(job.tasks):
        raise not_found("The task does not exist.")
    task = job.tasks[int(raw_task) - 1]
    href = f"{request.url.origin()}{PREFIX}/async/v1/job/{job.id}/task/{task.id}"
    if request.match_info.get("result"):
        if task.answer is None:
            raise not_found("The task has not completed yet.")
        return _response(sim, task.answer)
    document: dict[str, Any] = {
        "links": [{"rel": "related", "href": f"{href}/result"}, {"rel": "self", "href": href}],
        "completed": task.answer is not None,
        "id": str(task.id),
        "progress": task.progress,
    }
    if task.started_at is not None:
        document["startTime"] = iso_utc(task.started_at)
    if task.ended_at is not None:
        document["endTime"] = iso_utc(task.ended_at)
    return _json(sim, document)


# -- SuiteQL and the token endpoint ----------------------------------------------------------


async def _suiteql(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    if request.headers.get("Prefer", "").lower() != "transient":
        raise NsError(400, "INVALID_HEADER", "SuiteQL requires Prefer: transient.", header="Prefer")
    limit, offset = check_paging(request.query.get("limit"), request.query.get("offset"))
    query = _object(_parse_json(await request.read())).get("q")
    if not isinstance(query, str):
        raise NsError(400, "INVALID_CONTENT", 'The body must be {"q": "<SuiteQL>"}.')
    result = execute(query, sim.tables, limit=limit, offset=offset)
    has_more = offset + len(result.items) < result.total
    url = request.url.with_query(None)

    def page(rel: str, at: int) -> dict[str, str]:
        return {"rel": rel, "href": str(url.with_query(limit=str(limit), offset=str(at)))}

    last = max(0, (result.total - 1) // limit * limit)
    links = [page("first", 0)]
    if offset > 0:
        links.append(page("previous", max(0, offset - limit)))
    if has_more:
        links.append(page("next", offset + limit))
    links += [page("last", last), {"rel": "self", "href": str(request.url)}]
    return _json(
        sim,
        {
            "links": links,
            "count": len(result.items),
            "hasMore": has_more,
            "items": result.items,
            "offset": offset,
            "totalResults": result.total,
        },
    )


async def _token(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    token_url = f"{request.url.origin()}{PREFIX}/auth/oauth2/v1/token"
    try:
        answer = sim.auth.token_request(
            request.headers.get("Content-Type", ""), await request.read(), token_url, sim.clock()
        )
    except OAuthError as error:
        return _json(sim, error.body(), error.status)
    return _json(sim, answer)


# -- the control API -------------------------------------------------------------------------


class RejectionSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    status: int = 400
    code: str = "USER_ERROR"
    detail: str = "The record was refused by a business rule (simulated)."


class FaultControls(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /_sim/faults``: every field optional; the answer is the state after the change."""

    script: list[Fault] = []
    clear_script: bool = False
    profile: FaultProfile | None = None
    latency_s: float | None = None
    concurrency: int | None = None
    over_limit_status: int | None = None
    reject: dict[str, RejectionSpec] = {}
    accept: list[str] = []


def _controls(sim: NetSuiteSim) -> dict[str, Any]:
    return {
        "scripted": msgspec.to_builtins(list(sim.faults.scripted)),
        "profile": msgspec.to_builtins(sim.faults.profile),
        "latency_s": sim.latency_s,
        "concurrency": sim.concurrency,
        "over_limit_status": sim.over_limit_status,
        "rejected": sorted(sim.records.rejections),
    }


async def _post_faults(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    try:
        controls = msgspec.json.decode(await request.read(), type=FaultControls)
        if controls.latency_s is not None and not controls.latency_s >= 0:
            raise ValueError("latency_s must be >= 0")
        if controls.concurrency is not None and controls.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if controls.over_limit_status not in (None, 401, 429):
            raise ValueError("over_limit_status must be 429 or 401")
        for spec in controls.reject.values():
            if not 400 <= spec.status < 500:
                raise ValueError("a rejection is a 4xx")
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if controls.clear_script:
        sim.faults.clear_script()
    sim.faults.script(*controls.script)
    if controls.profile is not None:
        sim.faults.profile = controls.profile
    if controls.latency_s is not None:
        sim.latency_s = controls.latency_s
    if controls.concurrency is not None:
        sim.concurrency = controls.concurrency
    if controls.over_limit_status is not None:
        sim.over_limit_status = controls.over_limit_status
    for external_id, spec in controls.reject.items():
        sim.reject(external_id, status=spec.status, code=spec.code, detail=spec.detail)
    for external_id in controls.accept:
        sim.accept(external_id)
    return web.json_response(_controls(sim))


async def _get_ledger(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    ledger = sorted(sim.ledger().items())
    return web.json_response(
        {
            "records": [{"type": t, "externalId": e, "created": n} for (t, e), n in ledger],
            "duplicates": [
                {"type": t, "externalId": e, "created": n} for (t, e), n in ledger if n > 1
            ],
        }
    )


# -- application and runner ------------------------------------------------------------------


def make_app(sim: NetSuiteSim) -> web.Application:
    """The aiohttp application serving ``sim``; serve it with ``handler_cancellation=True``."""
    app = web.Application(middlewares=[_governance], client_max_size=104 * 1024 * 1024)
    app[SIM] = sim
    app[_RUNTIME] = _Runtime()
    app.on_shutdown.append(_release_hung_requests)
    app.router.add_route("*", f"{PREFIX}/record/v1/{{tail:.+}}", _record)
    app.router.add_post(f"{PREFIX}/query/v1/suiteql", _suiteql)
    app.router.add_post(f"{PREFIX}/auth/oauth2/v1/token", _token)
    job = f"{PREFIX}/async/v1/job/{{job}}"
    app.router.add_get(job, _get_job)
    app.router.add_get(f"{job}/task", _get_tasks)
    app.router.add_get(f"{job}/task/", _get_tasks)
    app.router.add_get(f"{job}/task/{{task}}", _get_task)
    app.router.add_get(f"{job}/task/{{task}}/{{result:result}}", _get_task)
    app.router.add_get("/_sim/ledger", _get_ledger)
    app.router.add_post("/_sim/faults", _post_faults)
    return app


async def _release_hung_requests(app: web.Application) -> None:
    app[_RUNTIME].released.set()


@dataclass(frozen=True, slots=True)
class NetSuiteServer:
    url: str
    """Base URL, e.g. ``http://127.0.0.1:41234`` (clients append ``/services/rest/...``)."""
    sim: NetSuiteSim
    _runtime: _Runtime

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is re-checked whenever a request enters or
        leaves the service (e.g. ``lambda: server.sim.inflight == 5``)."""
        await self._runtime.wait_until(predicate)

    @property
    def rest_url(self) -> str:
        """``<url>/services/rest``."""
        return f"{self.url}{PREFIX}"


@contextlib.asynccontextmanager
async def run_netsuite_sim(
    sim: NetSuiteSim | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[NetSuiteServer]:
    """Serve ``sim`` (default: a fresh :class:`NetSuiteSim`) on ``host:port`` (0: ephemeral)
    until the block ends. A client that gives up cancels its handler (``handler_cancellation``)
    and so frees its concurrency slot, as a real server stops working for a gone client."""
    sim = sim if sim is not None else NetSuiteSim()
    app = make_app(sim)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        netloc = f"[{host}]" if ":" in host else host
        bound = int(runner.addresses[0][1])
        yield NetSuiteServer(f"http://{netloc}:{bound}", sim, app[_RUNTIME])
    finally:
        await runner.cleanup()
