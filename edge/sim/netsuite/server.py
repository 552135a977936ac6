"""The NetSuite-shaped HTTP service: the simulator's pure parts served over real HTTP.

Theory of operation
-------------------
:class:`NetSuiteSim` holds the state: the item :class:`~edge.sim.netsuite.catalogue.Catalogue`,
the :class:`~edge.sim.netsuite.records.RecordStore` (records, external ids, the exactly-once
counters), the :class:`~edge.sim.netsuite.auth.Authenticator` (TBA signatures recomputed from
the request as received; OAuth 2.0 assertions verified with the mapped public key) and the
SuiteQL tables. :func:`make_app` is the aiohttp shell; :func:`run_netsuite_sim` serves it on
an ephemeral loopback port. Each request, in order:

1. governance: more than ``concurrency`` requests in flight get 429 (or, with
   ``over_limit_status = 401``, the INVALID_LOGIN that NetSuite gives under load, ref §6);
2. a scripted fault, if any (``sim.script(status, ...)``: 429, 500, 503 answered as NetSuite
   would, before anything is done);
3. authentication (401 INVALID_LOGIN);
4. the operation; any refusal is an nsError body with ``o:errorDetails`` (ref §3).

Routes (under ``/services/rest``): ``POST record/v1/{type}`` (204 + Location), ``PUT
record/v1/{type}/eid:{id}`` (upsert, 204 + Location), ``GET record/v1/{type}/{ref}``,
``POST query/v1/suiteql`` (``Prefer: transient``, paged), ``POST auth/oauth2/v1/token``.
Not served: async jobs and the 100-record batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from edge.sim.netsuite.auth import Authenticator, OAuth2Client, TbaCredential
from edge.sim.netsuite.catalogue import Catalogue
from edge.sim.netsuite.errors import NsError, OAuthError, invalid_login
from edge.sim.netsuite.records import RecordStore
from edge.sim.netsuite.suiteql import check_paging, execute
from edge.sim.netsuite.tables import tables_for

PREFIX = "/services/rest"


class NetSuiteSim:
    def __init__(
        self,
        account_id: str = "1234567",
        *,
        catalogue_size: int = 500,
        tba: Iterable[TbaCredential] = (),
        oauth2: Iterable[OAuth2Client] = (),
        concurrency: int = 5,
        over_limit_status: int = 429,
        latency_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account_id = account_id
        self.clock = clock
        self.catalogue = Catalogue(catalogue_size)
        self.records = RecordStore(self.catalogue, now=clock())
        self.auth = Authenticator(account_id, tba=tba, oauth2=oauth2)
        self.tables = tables_for(self.catalogue, self.records)
        self.concurrency = concurrency
        self.over_limit_status = over_limit_status
        self.latency_s = latency_s
        """Service time of every request (a concurrency slot is held meanwhile)."""
        self.inflight = 0
        self.peak_inflight = 0
        self.requests = 0
        self.refused_over_limit = 0
        self._script: deque[int] = deque()

    def script(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (429, 500, 503), one each."""
        self._script.extend(statuses)

    def count(self, record_type: str, external_id: str) -> int:
        """How many records of the type were ever created under the external id."""
        return self.records.create_count(external_id, record_type)

    def walk_in_customer_id(self) -> str:
        return str(self.records.records("customer")[0].id)


SIM = web.AppKey("netsuite_sim", NetSuiteSim)


def _ns_error(error: NsError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers)


@web.middleware
async def _governance(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    sim = request.app[SIM]
    sim.requests += 1
    if sim.inflight >= sim.concurrency:
        sim.refused_over_limit += 1
        if sim.over_limit_status == 401:
            return _ns_error(invalid_login())
        return _ns_error(
            NsError(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded.")
        )
    sim.inflight += 1
    sim.peak_inflight = max(sim.peak_inflight, sim.inflight)
    try:
        if sim.latency_s:
            await asyncio.sleep(sim.latency_s)
        if sim._script:
            status = sim._script.popleft()
            return _ns_error(NsError(status, "SCRIPTED_FAULT", f"scripted {status}"))
        if not request.path.endswith("/auth/oauth2/v1/token"):
            sim.auth.check(
                request.method, str(request.url), request.headers.get("Authorization"), sim.clock()
            )
        return await handler(request)
    except NsError as error:
        return _ns_error(error)
    finally:
        sim.inflight -= 1


def _location(request: web.Request, record_type: str, record_id: int) -> dict[str, str]:
    return {"Location": f"{request.url.origin()}{PREFIX}/record/v1/{record_type}/{record_id}"}


async def _json_body(request: web.Request) -> dict[str, object]:
    try:
        body = await request.json()
    except ValueError:
        raise NsError(400, "INVALID_CONTENT", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise NsError(400, "INVALID_CONTENT", "The request body must be a JSON object.")
    return body


async def _create(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    record_type = request.match_info["type"]
    record = sim.records.create(record_type, await _json_body(request), sim.clock())
    return web.Response(status=204, headers=_location(request, record.record_type, record.id))


async def _put(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    record_type, ref = request.match_info["type"], request.match_info["ref"]
    if not ref.startswith("eid:"):
        raise NsError(400, "INVALID_PARAMETER", "Upsert (PUT) supports only external IDs.")
    body = await _json_body(request)
    record, _ = sim.records.upsert(record_type, ref.removeprefix("eid:"), body, sim.clock())
    return web.Response(status=204, headers=_location(request, record.record_type, record.id))


async def _get(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    record = sim.records.get(request.match_info["type"], request.match_info["ref"])
    base = f"{request.url.origin()}{PREFIX}"
    return web.json_response(sim.records.render(record, base, expand=False))


async def _suiteql(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    if request.headers.get("Prefer", "").lower() != "transient":
        raise NsError(400, "INVALID_HEADER", "SuiteQL requires Prefer: transient.", header="Prefer")
    limit, offset = check_paging(request.query.get("limit"), request.query.get("offset"))
    body = await _json_body(request)
    query = body.get("q")
    if not isinstance(query, str):
        raise NsError(400, "INVALID_CONTENT", 'The body must be {"q": "<SuiteQL>"}.')
    result = execute(query, sim.tables, limit=limit, offset=offset)
    has_more = offset + len(result.items) < result.total
    return web.json_response(
        {
            "links": [{"rel": "self", "href": str(request.url)}],
            "count": len(result.items),
            "hasMore": has_more,
            "items": result.items,
            "offset": offset,
            "totalResults": result.total,
        }
    )


async def _token(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    token_url = f"{request.url.origin()}{PREFIX}/auth/oauth2/v1/token"
    try:
        answer = sim.auth.token_request(
            request.headers.get("Content-Type", ""), await request.read(), token_url, sim.clock()
        )
    except OAuthError as error:
        return web.json_response(error.body(), status=error.status)
    return web.json_response(answer)


def make_app(sim: NetSuiteSim) -> web.Application:
    app = web.Application(middlewares=[_governance])
    app[SIM] = sim
    app.router.add_post(f"{PREFIX}/record/v1/{{type}}", _create)
    app.router.add_put(f"{PREFIX}/record/v1/{{type}}/{{ref}}", _put)
    app.router.add_get(f"{PREFIX}/record/v1/{{type}}/{{ref}}", _get)
    app.router.add_post(f"{PREFIX}/query/v1/suiteql", _suiteql)
    app.router.add_post(f"{PREFIX}/auth/oauth2/v1/token", _token)
    return app


@dataclass(frozen=True, slots=True)
class NetSuiteServer:
    url: str
    """Base URL, e.g. ``http://127.0.0.1:41234`` (clients append ``/services/rest/...``)."""
    sim: NetSuiteSim


@contextlib.asynccontextmanager
async def run_netsuite_sim(
    sim: NetSuiteSim | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[NetSuiteServer]:
    sim = sim if sim is not None else NetSuiteSim()
    runner = web.AppRunner(make_app(sim), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield NetSuiteServer(f"http://{host}:{int(runner.addresses[0][1])}", sim)
    finally:
        await runner.cleanup()
