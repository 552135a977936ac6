"""The NetSuite connector: the outbox's items posted through SuiteTalk REST, exactly once.

Theory of operation
-------------------
Every item goes through the single-record path unless batches are on (below). For each item:

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

Asynchronous batches (setting ``batch``, off by default: ref §0.3 calls the feature newer than
pages that say REST has no bulk create). The sender then hands up to ``batch_size`` (≤ 100)
items at once. Items whose plan is one record (a single-tender cash sale, a refund; the
customer and ``createdFrom`` resolved first, as above) are grouped by record type, and each
group is one ``PUT /record/v1/<type>`` with ``Prefer: respond-async``, the collection content
type and ``{"items": [...]}`` (ref §2.3); the others take the single-record path meanwhile.

- ``X-NetSuite-Idempotency-Key`` is a UUID derived from the request itself (method, path,
  body), so the same batch sent again after a crash or a lost answer carries the same key:
  NetSuite answers 400 ``IDEMPOTENCY_ERROR`` with the first job's ``Location`` (ref §2.2) and
  the connector follows it instead of submitting a second job. A batch composed differently
  gets a new key; its upserts still land on the same records.
- The job is polled (``GET async/v1/job/<id>``, every ``batch_poll_s``, growing to 5 s) until
  ``completed``, for at most ``batch_wait_s``; still running then: every item is retried later
  (and the same batch finds the same job).
- The outcome of each item is read from NetSuite itself, not from the task results (their
  body is undocumented, ref §2.1): one SuiteQL query for the records holding the batch's
  external ids (``transaction``, with the type checked). An item found is delivered; an item
  not found (its task failed) is posted on the single-record path, which upserts it or
  collects NetSuite's precise refusal for it alone.
- A batch request refused outright (no batch support, a malformed item) falls back to the
  single-record path for its items; 429, 401 under load, 5xx and WAN faults retry the whole
  group later, as for a single record.

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
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
    RecordType,
    external_id,
    plan_postings,
)
from edge.uplink.netsuite.reconcile import TYPE_CODES, ids_queries

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_RETRY_STATUSES = frozenset({408, 425, 429})
MAX_BATCH = 100  # records per batch request (ref §2.3)
_COLLECTION = "application/vnd.oracle.resource+json; type=collection"
_KEYS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:store-edge:netsuite:batch")
_POLL_CAP_S = 5.0


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
        batch: bool = False,
        batch_size: int = MAX_BATCH,
        batch_poll_s: float = 0.5,
        batch_wait_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH}")
        self._base = base_url.rstrip("/") + "/services/rest"
        self._account = account_id
        self._credentials = credentials
        self.mapping = mapping
        self.max_concurrency = concurrency
        self._slots = AccountSlots(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._throttle_on_401 = throttle_on_401
        self._batch = batch
        self.max_batch = batch_size if batch else 1
        self._batch_poll_s = batch_poll_s
        self._batch_wait_s = batch_wait_s
        self._batch_refusals: set[str] = set()
        self._clock = clock
        self._tokens = TokenCache()
        self._token_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._key: Any = None

    # -- the Connector interface ----------------------------------------------------------

    async def deliver(self, batch: Sequence[Outbound]) -> list[Outcome]:
        if self._batch and len(batch) > 1:
            return await self._deliver_batch(batch)
        return list(await asyncio.gather(*(self._deliver_one(item) for item in batch)))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one item ---------------------------------------------------------------------------

    async def _deliver_one(self, item: Outbound) -> Outcome:
        planned = self._plan(item)
        if not isinstance(planned, Plan):
            return planned
        return await _outcome_of(self._post(planned))

    def _plan(self, item: Outbound) -> Plan | Outcome:
        """The item's records, or its outcome when nothing is to be sent."""
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
        return plan

    async def _post(self, plan: Plan) -> Outcome:
        entity = await self._customer(plan) if plan.customer is not None else None
        ids: list[str] = []
        for posting in plan.postings:
            ids.append(await self._upsert(posting, await self._compose(posting, entity, ids)))
        primary = plan.postings[plan.primary]
        return Delivered(f"{primary.record_type}:{ids[plan.primary]}")

    async def _compose(
        self, posting: Posting, entity: str | None, ids: Sequence[str]
    ) -> dict[str, Any]:
        """The posting's body with what NetSuite alone knows: the customer's internal id, the
        invoice a payment applies to, the return authorization a refund is created from
        (``ids``: the plan's records posted so far), the original sale a return links to."""
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
        if posting.from_posting is not None:
            body["createdFrom"] = {"id": ids[posting.from_posting]}
        if posting.created_from is not None:
            original = await self._find_original(posting.created_from)
            if original is not None:
                body["createdFrom"] = {"id": original}
            else:
                body["memo"] = f"{body['memo']} / original {posting.created_from} not found"
        return body

    # -- asynchronous batches (ref §2) ------------------------------------------------------

    async def _deliver_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        """One-record plans of the same record type grouped into async batches; the rest, and
        whatever a batch did not land, on the single-record path."""
        outcomes: dict[int, Outcome] = {}
        plans: dict[int, Plan] = {}
        groups: dict[RecordType, list[int]] = {}
        for index, item in enumerate(batch):
            planned = self._plan(item)
            if not isinstance(planned, Plan):
                outcomes[index] = planned
                continue
            plans[index] = planned
            if _one_record(planned):
                groups.setdefault(planned.postings[0].record_type, []).append(index)
        batched = [members for members in groups.values() if len(members) > 1]
        alone = set(plans).difference(*batched)

        async def single(index: int) -> None:
            outcomes[index] = await _outcome_of(self._post(plans[index]))

        async def compose(index: int) -> tuple[int, Posting, dict[str, Any]] | None:
            plan = plans[index]
            try:
                entity = await self._customer(plan) if plan.customer is not None else None
                return index, plan.postings[0], await self._compose(plan.postings[0], entity, ())
            except RequestFailed as stop:
                outcomes[index] = stop.outcome
                return None

        async def group(members: list[int]) -> None:
            bodies = [body for body in await asyncio.gather(*map(compose, members)) if body]
            landed = await self._post_batch(bodies) if bodies else []
            for (index, _, _), outcome in zip(bodies, landed, strict=True):
                if outcome is not None:
                    outcomes[index] = outcome
            await asyncio.gather(*(single(i) for i, _, _ in bodies if i not in outcomes))

        await asyncio.gather(*map(single, alone), *map(group, batched))
        return [outcomes[index] for index in range(len(batch))]

    async def _post_batch(
        self, members: Sequence[tuple[int, Posting, dict[str, Any]]]
    ) -> list[Outcome | None]:
        """One async batch upsert of the members' bodies (one record type); per member, its
        outcome, or None: not landed by the batch, to post on the single-record path."""
        record_type = members[0][1].record_type
        count = len(members)
        path = f"/record/v1/{record_type}"
        data = _encode({"items": [body for _, _, body in members]})
        key = uuid.uuid5(_KEYS, f"PUT {path} {hashlib.sha256(data).hexdigest()}")
        try:
            status, answer, headers = await self._request(
                "PUT",
                path,
                data,
                expect=(202, 400),
                prefer="respond-async",
                content_type=_COLLECTION,
                headers={"X-NetSuite-Idempotency-Key": str(key)},
            )
            job = _rest_path(headers.get("Location", ""))
            replayed = _first_error(answer).get("o:errorCode") == "IDEMPOTENCY_ERROR"
            if job is None or (status == 400 and not replayed):
                self._batch_refused(record_type, self._classify(status, answer, headers))
                return [None] * count
            # 202, or the same batch already submitted (ref §2.2): its job either way.
            if not await self._job_completed(job):
                return [RetryLater("NetSuite's batch job is still running", "timeout")] * count
            held = await self._held(record_type, [posting.external_id for _, posting, _ in members])
        except RequestFailed as stop:
            if isinstance(stop.outcome, Rejected):
                self._batch_refused(record_type, stop.outcome)
                return [None] * count
            return [stop.outcome] * count
        return [
            Delivered(f"{record_type}:{held[posting.external_id.lower()]}")
            if posting.external_id.lower() in held
            else None
            for _, posting, _ in members
        ]

    def _batch_refused(self, record_type: str, outcome: Outcome) -> None:
        """NetSuite refused a batch request itself (no batch support on the account, a
        malformed item): its records go the single-record path. Logged once per reason."""
        reason = outcome.code if isinstance(outcome, Rejected) else str(outcome)
        if reason not in self._batch_refusals:
            self._batch_refusals.add(reason)
            log.warning(
                "netsuite: a %s batch was refused (%s); its records are posted one by one",
                record_type,
                outcome,
            )

    async def _job_completed(self, path: str) -> bool:
        """Poll an async job until it completes (True) or ``batch_wait_s`` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._batch_wait_s
        delay = self._batch_poll_s
        while True:
            _, job, _ = await self._request("GET", path, expect=(200,))
            if isinstance(job, dict) and job.get("completed") is True:
                return True
            if loop.time() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _POLL_CAP_S)

    async def _held(self, record_type: RecordType, eids: Sequence[str]) -> dict[str, str]:
        """Lower-cased external id -> internal id of the records of ``record_type`` NetSuite
        holds under ``eids``."""
        held: dict[str, str] = {}
        for query in ids_queries(eids):
            for row in await self.suiteql(query):
                if row.get("type") == TYPE_CODES[record_type] and row.get("externalid"):
                    held[str(row["externalid"]).lower()] = str(row["id"])
        return held

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
        body: dict[str, Any] | bytes | None = None,
        *,
        expect: tuple[int, ...] = (),
        prefer: str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        background: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        """One call under the account's concurrency limit. A status in ``expect`` (or a 404 to
        a GET with no ``expect``) returns; every other answer ends the item
        (:class:`RequestFailed`)."""
        url = self._base + path
        session = self._http()
        data = _encode(body) if isinstance(body, dict) else body
        async with self._slots.slot(background=background):
            # A WAN fault is an outcome like any answer: every caller (postings, the
            # catalogue, the reconciliation) gets RequestFailed(RetryLater), never a raw
            # aiohttp or timeout exception (the token fetch included).
            try:
                sent = dict(headers or {})
                sent["Authorization"] = await self._authorization(method, url)
                if prefer:
                    sent["Prefer"] = prefer
                if data is not None:
                    sent["Content-Type"] = content_type
                async with session.request(method, url, data=data, headers=sent) as response:
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
        first = _first_error(body)
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


async def _outcome_of(posting: Awaitable[Outcome]) -> Outcome:
    """The outcome of a posting coroutine: its own, or how NetSuite or the WAN ended it."""
    try:
        outcome = await posting
    except RequestFailed as stop:
        return stop.outcome
    except TimeoutError:
        return RetryLater("NetSuite did not answer in time", "timeout")
    except aiohttp.ClientError as exc:
        return RetryLater(f"NetSuite unreachable: {exc}", "connection")
    return outcome


def _one_record(plan: Plan) -> bool:
    """A plan a batch can carry: one record that needs no other record's internal id."""
    return len(plan.postings) == 1 and plan.postings[0].apply_to is None


def _first_error(body: Any) -> dict[str, Any]:
    """The first entry of an nsError body's ``o:errorDetails`` ({} when there is none)."""
    details = body.get("o:errorDetails") if isinstance(body, dict) else None
    first = details[0] if isinstance(details, list) and details else {}
    return first if isinstance(first, dict) else {}


def _rest_path(location: str) -> str | None:
    """``/async/v1/job/<id>`` of a ``Location`` (a path or a URL, ref §2.1), or None."""
    marker = "/services/rest"
    at = location.find(marker)
    return (location[at + len(marker) :] or None) if at >= 0 else None


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
