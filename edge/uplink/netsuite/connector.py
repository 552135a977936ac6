"""The NetSuite connector: the outbox's items posted through SuiteTalk REST, exactly once.

Theory of operation
-------------------
The sender hands batches of one (``max_batch = 1``: the single-record path; NetSuite's
100-record async batch is not used yet). For each item:

1. decode the stored transaction and :func:`~edge.uplink.netsuite.mapping.plan_postings`;
   a :class:`~edge.uplink.netsuite.mapping.Preflight` failure parks it with the precise reason
   (nothing is sent); kinds that are not ERP records are delivered as ``not-posted``;
2. resolve the customer, if one is named: a SuiteQL search by email (ref §4; a customer
   already in NetSuite under that email is used, never duplicated), else an upsert by
   external id ``cust-<id>``;
3. upsert each record with ``PUT /record/v1/<type>/eid:<external id>`` (ref §1.5), in order:
   a payment gets ``apply`` to the invoice just posted; a refund gets ``createdFrom`` the
   original sale when NetSuite holds it (looked up by its external id);
4. the outcome: ``Delivered("<type>:<internal id>")`` of the primary record.

Every write is an upsert by a deterministic external id, so a plan replayed after a crash, a
timeout or a lost answer updates the same records: nothing twice (ref §0.2).

Classification of NetSuite's answers (ref §3, §6):

===============================  ===========================================================
answer                           outcome
===============================  ===========================================================
2xx                              continue / Delivered
429                              RetryLater(throttled, Retry-After when given)
401 under load (setting          RetryLater(throttled): NetSuite answers INVALID_LOGIN when
``throttle_on_401``, default on) the account's concurrency limit is exceeded (ref §6); the
                                 OAuth 2.0 token is dropped and fetched again
5xx                              RetryLater(server)
other 4xx                        Rejected(o:errorCode, detail, the whole nsError body)
connection refused/reset         RetryLater(connection)
no answer in ``timeout_s``       RetryLater(timeout)
===============================  ===========================================================

Governance: every HTTP request (token, query, upsert) takes a slot of :class:`AccountSlots`, the
account-wide limit of ``concurrency`` concurrent requests (default 5, ref §6). Postings have
priority: background reads (the catalogue) take a slot only while postings leave room at their
recent peak, or once they have waited ``background_wait_s`` with no posting waiting, so a
catalogue sync neither slows a backlog drain nor starves behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import msgspec

from edge.outbox.policy import Delivered, Rejected, RetryLater
from edge.outbox.transactions import decode_transaction
from edge.uplink.base import Outbound, Outcome
from edge.uplink.netsuite.auth import (
    JwsAlgorithm,
    TokenCache,
    build_client_assertion,
    tba_authorization_header,
    token_request_form,
)
from edge.uplink.netsuite.mapping import (
    Mapping,
    Plan,
    Posting,
    Preflight,
    external_id,
    plan_postings,
)

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_RETRY_STATUSES = frozenset({408, 425, 429})


class RequestFailed(Exception):
    """NetSuite did not answer as expected; :attr:`outcome` says how (retry later or rejected,
    with NetSuite's error). Ends one item's delivery; tools see it too."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


class AccountSlots:
    """The account's concurrency limit, with priority for postings over background reads.

    A posting takes any free slot, ahead of every waiting background read. A background read
    (the catalogue, the reconciliation's queries) starts when postings left at least two slots
    unused at their peak over the last ``window_s`` (so one stays free for the next posting),
    or, so that it is never starved, once it has waited ``background_wait_s`` and a slot is
    free with no posting waiting. The recent peak, not "a slot is free right now", is the
    measure of demand: a backlog drain posts in waves (postings start together and take the
    same time), and a read slipping into every gap between waves took a fifth of the account.
    """

    def __init__(
        self,
        limit: int,
        *,
        background_wait_s: float = 5.0,
        window_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.busy = 0
        self._foreground = 0
        self._foreground_waiting = 0
        self._background_wait_s = background_wait_s
        self._window_s = window_s
        self._monotonic = monotonic
        self._window_start = monotonic()
        self._peak = 0
        self._previous_peak = 0
        self._changed = asyncio.Condition()

    def recent_peak(self) -> int:
        """The most postings in flight at once over the last one to two windows."""
        now = self._monotonic()
        elapsed = now - self._window_start
        if elapsed >= self._window_s:
            self._previous_peak = self._peak if elapsed < 2 * self._window_s else 0
            self._peak = self._foreground
            self._window_start = now
        return max(self._previous_peak, self._peak)

    def _background_wait(self, started: float) -> float | None:
        """0 when a background read may start now, else how long to wait before looking
        again (None: until a slot is released)."""
        if self._foreground_waiting or self.busy >= self.limit:
            return None
        if self.recent_peak() <= self.limit - 2:
            return 0.0
        now = self._monotonic()
        until_bound = started + self._background_wait_s - now
        if until_bound <= 0:
            return 0.0
        return min(until_bound, self._window_start + self._window_s - now)

    @contextlib.asynccontextmanager
    async def slot(self, *, background: bool = False) -> AsyncIterator[None]:
        async with self._changed:
            if background:
                started = self._monotonic()
                while (left := self._background_wait(started)) != 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(left, 0.001) if left else None):
                            await self._changed.wait()
            else:
                self._foreground_waiting += 1
                try:
                    await self._changed.wait_for(lambda: self.busy < self.limit)
                finally:
                    self._foreground_waiting -= 1
                self._foreground += 1
                self._peak = max(self._peak, self._foreground)
            self.busy += 1
        try:
            yield
        finally:
            async with self._changed:
                self.busy -= 1
                if not background:
                    self._foreground -= 1
                self._changed.notify_all()


@dataclass(frozen=True, slots=True)
class TbaCredentials:
    consumer_key: str
    consumer_secret: str
    token_id: str
    token_secret: str


@dataclass(frozen=True, slots=True)
class OAuth2Credentials:
    client_id: str
    certificate_id: str
    private_key_pem: bytes
    algorithm: JwsAlgorithm = "PS256"


class NetSuiteConnector:
    name = "netsuite"
    max_batch = 1

    def __init__(
        self,
        *,
        base_url: str,
        account_id: str,
        credentials: TbaCredentials | OAuth2Credentials,
        mapping: Mapping,
        concurrency: int = 5,
        timeout_s: float = 30.0,
        throttle_on_401: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = base_url.rstrip("/") + "/services/rest"
        self._account = account_id
        self._credentials = credentials
        self.mapping = mapping
        self.max_concurrency = concurrency
        self._slots = AccountSlots(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._throttle_on_401 = throttle_on_401
        self._clock = clock
        self._tokens = TokenCache()
        self._token_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._key: Any = None

    # -- the Connector interface ----------------------------------------------------------

    async def deliver(self, batch: Sequence[Outbound]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._deliver_one(item) for item in batch)))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one item ---------------------------------------------------------------------------

    async def _deliver_one(self, item: Outbound) -> Outcome:
        try:
            txn = decode_transaction(item.payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Rejected("NS_BAD_PAYLOAD", f"stored transaction unreadable: {exc}")
        try:
            plan = plan_postings(txn, self.mapping)
        except Preflight as exc:
            return Rejected(exc.code, exc.message, {"preflight": exc.detail})
        if plan.not_posted is not None:
            return Delivered(f"not-posted:{txn.kind}")
        try:
            return await self._post(plan)
        except RequestFailed as stop:
            return stop.outcome
        except TimeoutError:
            return RetryLater("NetSuite did not answer in time", "timeout")
        except aiohttp.ClientError as exc:
            return RetryLater(f"NetSuite unreachable: {exc}", "connection")

    async def _post(self, plan: Plan) -> Outcome:
        entity = await self._customer(plan) if plan.customer is not None else None
        ids: list[str] = []
        for posting in plan.postings:
            body = dict(posting.body)
            if entity is not None:
                body["customer" if posting.record_type == "customerPayment" else "entity"] = {
                    "id": entity
                }
            if posting.apply_to is not None:
                body["apply"] = {
                    "items": [
                        {
                            "doc": {"id": ids[posting.apply_to]},
                            "apply": True,
                            "amount": msgspec.Raw(format(posting.amount_applied, "f").encode()),
                        }
                    ]
                }
            if posting.created_from is not None:
                original = await self._find_original(posting.created_from)
                if original is not None:
                    body["createdFrom"] = {"id": original}
                else:
                    body["memo"] = f"{body['memo']} / original {posting.created_from} not found"
            ids.append(await self._upsert(posting, body))
        primary = plan.postings[plan.primary]
        return Delivered(f"{primary.record_type}:{ids[plan.primary]}")

    async def _customer(self, plan: Plan) -> str:
        ref = plan.customer
        assert ref is not None
        if ref.email:
            email = ref.email.replace("'", "''")
            rows = await self.suiteql(
                f"SELECT id FROM customer WHERE email = '{email}' ORDER BY id"
            )
            if rows:
                return str(rows[0]["id"])
        body: dict[str, Any] = {
            "externalId": ref.external_id,
            "subsidiary": {"id": self.mapping.subsidiary_id},
            "isPerson": False,
            "companyName": f"POS customer {ref.customer_id}",
        }
        if ref.email:
            body["email"] = ref.email
        return await self._put("customer", ref.external_id, body)

    async def _find_original(self, txn_id: str) -> str | None:
        for record_type in ("cashSale", "invoice"):
            status, found, _ = await self._request(
                "GET", f"/record/v1/{record_type}/eid:{external_id(txn_id)}"
            )
            if status == 200 and isinstance(found, dict) and "id" in found:
                return str(found["id"])
        return None

    async def _upsert(self, posting: Posting, body: dict[str, Any]) -> str:
        return await self._put(posting.record_type, posting.external_id, body)

    async def _put(self, record_type: str, eid: str, body: dict[str, Any]) -> str:
        path = f"/record/v1/{record_type}/eid:{eid}"
        _, _, headers = await self._request("PUT", path, body, expect=(200, 204))
        location = headers.get("Location", "")
        if location.rstrip("/").rsplit("/", 1)[-1].isdigit():
            return location.rstrip("/").rsplit("/", 1)[-1]
        # No Location (UNCERTAIN for upserts, ref §10.3): read the record back.
        _, found, _ = await self._request("GET", path, expect=(200,))
        return str(found["id"])

    async def upsert(self, record_type: str, eid: str, body: dict[str, Any]) -> str:
        """Create or update one record by external id; its internal id (tools: the daily
        journal). Raises :class:`RequestFailed`."""
        return await self._put(record_type, eid, body)

    async def suiteql(
        self, query: str, *, limit: int = 1000, background: bool = False
    ) -> list[dict[str, Any]]:
        """Every row of a SuiteQL query (paged with ``offset += count`` while ``hasMore``;
        NetSuite stops at 100,000 rows: page larger reads by keyset, :meth:`suiteql_page`)."""
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            items, more = await self.suiteql_page(
                query, limit=limit, offset=offset, background=background
            )
            rows.extend(items)
            if not more or not items:
                return rows
            offset += len(items)

    async def suiteql_page(
        self, query: str, *, limit: int = 1000, offset: int = 0, background: bool = False
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of a SuiteQL query: its rows (without ``links``) and ``hasMore``.
        ``background``: a read that yields to postings (see :class:`AccountSlots`)."""
        _, page, _ = await self._request(
            "POST",
            f"/query/v1/suiteql?limit={limit}&offset={offset}",
            {"q": query},
            expect=(200,),
            prefer="transient",
            background=background,
        )
        items = page.get("items", [])
        rows = [{k: v for k, v in row.items() if k != "links"} for row in items]
        return rows, bool(page.get("hasMore"))

    # -- HTTP -------------------------------------------------------------------------------

    async def _request(
        self,
        method: Literal["GET", "PUT", "POST"],
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expect: tuple[int, ...] = (),
        prefer: str | None = None,
        background: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        """One call under the account's concurrency limit. A status in ``expect`` (or a 404 to
        a GET with no ``expect``) returns; every other answer ends the item
        (:class:`RequestFailed`)."""
        url = self._base + path
        session = self._http()
        data = _encode(body) if body is not None else None
        async with self._slots.slot(background=background):
            # A WAN fault is an outcome like any answer: every caller (postings, the
            # catalogue, the reconciliation) gets RequestFailed(RetryLater), never a raw
            # aiohttp or timeout exception (the token fetch included).
            try:
                headers = {"Authorization": await self._authorization(method, url)}
                if prefer:
                    headers["Prefer"] = prefer
                if data is not None:
                    headers["Content-Type"] = "application/json"
                async with session.request(method, url, data=data, headers=headers) as response:
                    raw = await response.read()
                    status = response.status
                    answer_headers = dict(response.headers)
            except TimeoutError:
                raise RequestFailed(
                    RetryLater("NetSuite did not answer in time", "timeout")
                ) from None
            except aiohttp.ClientError as exc:
                raise RequestFailed(
                    RetryLater(f"NetSuite unreachable: {exc}", "connection")
                ) from None
        parsed: Any = None
        if raw:
            try:
                parsed = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                parsed = {"body": raw[:2000].decode("utf-8", "replace")}
        if status in expect or (not expect and status in (200, 404)):
            return status, parsed, answer_headers
        raise RequestFailed(self._classify(status, parsed, answer_headers))

    def _classify(self, status: int, body: Any, headers: dict[str, str]) -> Outcome:
        details = body.get("o:errorDetails") if isinstance(body, dict) else None
        first = details[0] if isinstance(details, list) and details else {}
        code = str(first.get("o:errorCode") or f"HTTP_{status}")
        message = str(first.get("detail") or (body or {}).get("title") or f"HTTP {status}")
        if status in _RETRY_STATUSES:
            return RetryLater(f"NetSuite {status} {code}", "throttled", _retry_after(headers))
        if status == 401:
            self._tokens.invalidate()
            kind: Literal["throttled", "server"] = (
                "throttled" if self._throttle_on_401 else "server"
            )
            return RetryLater(f"NetSuite 401 {code}: {message}", kind)
        if status >= 500 or status == 403:
            return RetryLater(f"NetSuite {status} {code}: {message}", "server")
        return Rejected(code, message, body)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _authorization(self, method: str, url: str) -> str:
        creds = self._credentials
        if isinstance(creds, TbaCredentials):
            return tba_authorization_header(
                method,
                url,
                account_id=self._account,
                consumer_key=creds.consumer_key,
                consumer_secret=creds.consumer_secret,
                token=creds.token_id,
                token_secret=creds.token_secret,
                nonce=secrets.token_hex(16),
                timestamp=int(self._clock()),
            )
        return await self._bearer(creds)

    async def _bearer(self, creds: OAuth2Credentials) -> str:
        async with self._token_lock:
            now = self._clock()
            if self._tokens.needs_refresh(now):
                await self._fetch_token(creds, now)
            header = self._tokens.authorization(self._clock())
        if header is None:
            raise RequestFailed(RetryLater("no NetSuite access token", "server"))
        return header

    async def _fetch_token(self, creds: OAuth2Credentials, now: float) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        if self._key is None:
            self._key = load_pem_private_key(creds.private_key_pem, password=None)
        token_url = self._base + "/auth/oauth2/v1/token"
        assertion = build_client_assertion(
            client_id=creds.client_id,
            certificate_id=creds.certificate_id,
            private_key=self._key,
            algorithm=creds.algorithm,
            token_url=token_url,
            now=now,
        )
        async with self._http().post(token_url, data=token_request_form(assertion)) as response:
            raw = await response.read()
            if response.status != 200:
                log.warning("netsuite: token endpoint answered %s", response.status)
                if self._tokens.usable(now):
                    return  # keep using the old one until it expires
                raise RequestFailed(
                    RetryLater(f"NetSuite token endpoint {response.status}", "server")
                )
        self._tokens.accept(raw, sent_at=now)


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
