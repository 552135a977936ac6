"""Where the hub's catalogue comes from: the downsync source interface, and a client of the
generic HQ catalogue HTTP API.

Theory of operation
-------------------
A source knows nothing of the store. :meth:`CatalogueSource.fetch` takes the cloud cursor the
store kept with the last delta it applied (:meth:`~edge.catalogue.store.CatalogueStore.
upstream_cursor`; None on a new hub) and answers a :class:`Download`: either a **full** download
(``full=True``: the parts together list the whole catalogue, to be applied with
:meth:`~edge.catalogue.store.CatalogueStore.load_full`) or **incremental** deltas (each part is
applied on its own with :meth:`~edge.catalogue.store.CatalogueStore.apply_delta`). Every part is
one delta in the model's wire format (:class:`edge.catalogue.model.Delta`, JSON bytes); the
part that ends a download, and every incremental part, carries the cloud cursor to resume from
in ``upstream_cursor``, so the store saves it in the same transaction as the data.

The source decides full or incremental: full when there is no cursor, or when the cloud says
the cursor can no longer be served (its change log was trimmed, or it is another catalogue).

The generic HQ catalogue API
----------------------------
The contract :class:`HqCatalogueSource` speaks and :mod:`edge.sim.hq_catalogue` implements.
Every request carries ``Authorization: Bearer <token>``; every answer is JSON.

``GET {base}/catalogue/v1/changes?cursor=<cursor>&limit=<n>``
    The changes after ``cursor``, oldest first, at most ``limit`` (1-10000, default 1000) per
    page, each key once with its latest state (a deletion by key)::

        {"cursor": "<cursor after this page>", "more": false,
         "delta": {"delta_id": "hq-changes-41-57", "upstream_cursor": "<the same cursor>",
                   "items": [...], "prices": [...], "deleted": {"items": ["A12"]}}}

    ``more: true``: ask again from ``cursor``. A page taken from any prefix of the cloud's
    change history is consistent (applying it never names a record the hub lacks).
    ``410 CURSOR_EXPIRED``: the cursor is older than the cloud's change log, or not one of its
    cursors: do a full download.

``GET {base}/catalogue/v1/full?limit=<n>[&snapshot=<id>&page=<k>]``
    The whole catalogue at one point in time, ``limit`` items (with their prices) a page. The
    first request (no ``snapshot``) fixes the point in time and answers its id; the next pages
    name it::

        {"snapshot": "s-3", "page": 0, "more": true, "cursor": "<cursor of the snapshot>",
         "delta": {"delta_id": "hq-full-s-3-0", "custom_fields": [...], "tax_codes": [...],
                   "items": [...], "prices": [...]}}

    Page 0 also carries every custom field and tax code, the last page every promotion and
    ``upstream_cursor``: the cursor to ask for changes from once the load is applied.
    ``410 SNAPSHOT_EXPIRED``: the cloud no longer holds that snapshot: start again.

Errors are ``{"error": {"code", "message"}}``: 400 ``INVALID_QUERY``, 401 ``UNAUTHORIZED``,
410 as above, 429 and 5xx (retry later).

Errors of this module::

    SourceError(CatalogueError)    the cloud could not give the catalogue
    ├── SourceUnavailable          unreachable, timed out, 429 or 5xx; retryable
    └── SourceRefused              401/403, another 4xx, or an answer that is not the contract;
                                   not retryable until the configuration or the cloud changes
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

import aiohttp
import msgspec

from edge.catalogue.errors import CatalogueError

__all__ = [
    "CHANGES_PATH",
    "FULL_PATH",
    "CatalogueSource",
    "Download",
    "HqCatalogueSource",
    "SourceError",
    "SourceRefused",
    "SourceUnavailable",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANGES_PATH: Final = "/catalogue/v1/changes"
FULL_PATH: Final = "/catalogue/v1/full"
MAX_LIMIT: Final = 10_000


class SourceError(CatalogueError):
    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


class SourceUnavailable(SourceError):
    retryable = True


class SourceRefused(SourceError):
    retryable = False


@dataclass(frozen=True, slots=True)
class Download:
    """One fetch: a full catalogue or incremental deltas, as delta bytes one part at a time.

    Calling contract: iterate ``parts`` at most once, from the event loop; the parts are
    fetched as they are asked for, so a failure (:class:`SourceError`) can come from any
    ``__anext__``. Close it (``aclose``) when stopping early.
    """

    full: bool
    reason: str
    """Why full or incremental, for logs: ``no_cursor``, ``cursor_expired``, ``changes``."""
    parts: AsyncIterator[bytes]


class CatalogueSource(Protocol):
    """What the downsync needs from a cloud catalogue."""

    name: str
    """Short, for logs, metrics and the quarantine's ``source`` column."""

    async def fetch(self, cursor: str | None) -> Download:
        """Start a download from ``cursor`` (None: full). May raise :class:`SourceError`."""
        ...

    async def aclose(self) -> None: ...


class _ChangesPage(msgspec.Struct, frozen=True):
    cursor: str
    more: bool
    delta: msgspec.Raw


class _FullPage(msgspec.Struct, frozen=True):
    snapshot: str
    page: int
    more: bool
    cursor: str
    delta: msgspec.Raw


class _ErrorBody(msgspec.Struct, frozen=True):
    code: str = ""
    message: str = ""


class _ErrorAnswer(msgspec.Struct, frozen=True):
    error: _ErrorBody = _ErrorBody()


_changes_decoder: Final = msgspec.json.Decoder(_ChangesPage)
_full_decoder: Final = msgspec.json.Decoder(_FullPage)
_error_decoder: Final = msgspec.json.Decoder(_ErrorAnswer)


class _Expired(Exception):
    """A 410 answer: the cursor or the snapshot can no longer be served."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class HqCatalogueSource:
    """Client of the generic HQ catalogue API (module docstring). One aiohttp session, made on
    first use; its base URL is the single seam tests point at the simulator."""

    name = "hq"

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        page_size: int = 1000,
        timeout_s: float = 30.0,
        max_pages: int = 100_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be in 1..{MAX_LIMIT}")
        self._base = base_url.rstrip("/")
        self._token = token
        self.page_size = page_size
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_pages = max_pages
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Two connections at most: the catalogue never competes with transaction uploads,
            # which have their own session.
            connector = aiohttp.TCPConnector(limit=2, ssl=self._ssl or True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, cursor: str | None) -> Download:
        if cursor is None:
            return Download(full=True, reason="no_cursor", parts=self._full_parts())
        try:
            first = await self._changes(cursor)
        except _Expired as exc:
            log.info("catalogue source: %s (%s); full download", exc.code, exc)
            return Download(full=True, reason="cursor_expired", parts=self._full_parts())
        return Download(full=False, reason="changes", parts=self._change_parts(first))

    # -- pages ---------------------------------------------------------------------------------

    async def _change_parts(self, first: _ChangesPage) -> AsyncIterator[bytes]:
        page = first
        for _ in range(self._max_pages):
            yield bytes(page.delta)
            if not page.more:
                return
            try:
                page = await self._changes(page.cursor)
            except _Expired as exc:
                # Trimmed between two pages: what was applied stays; the next sync goes full.
                raise SourceUnavailable(str(exc), step="changes") from None
        raise SourceRefused(f"more than {self._max_pages} pages of changes", step="changes")

    async def _full_parts(self) -> AsyncIterator[bytes]:
        snapshot: str | None = None
        for number in range(self._max_pages):
            query = {"limit": str(self.page_size)}
            if snapshot is not None:
                query.update(snapshot=snapshot, page=str(number))
            try:
                body = await self._get(FULL_PATH, query, step=f"full page {number}")
            except _Expired as exc:
                raise SourceUnavailable(str(exc), step=f"full page {number}") from None
            page = self._decode(_full_decoder, body, f"full page {number}")
            if page.page != number or (snapshot is not None and page.snapshot != snapshot):
                raise SourceRefused(
                    f"asked for page {number} of {snapshot}, got {page.page} of {page.snapshot}",
                    step="full",
                )
            snapshot = page.snapshot
            yield bytes(page.delta)
            if not page.more:
                return
        raise SourceRefused(f"more than {self._max_pages} pages in a full download", step="full")

    async def _changes(self, cursor: str) -> _ChangesPage:
        query = {"cursor": cursor, "limit": str(self.page_size)}
        body = await self._get(CHANGES_PATH, query, step="changes")
        return self._decode(_changes_decoder, body, "changes")

    @staticmethod
    def _decode(decoder: msgspec.json.Decoder[T], body: bytes, step: str) -> T:
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise SourceRefused(f"answer is not the catalogue contract: {exc}", step=step) from None

    async def _get(self, path: str, query: dict[str, str], *, step: str) -> bytes:
        """One GET; the body of a 200, :class:`_Expired` for a 410, else a :class:`SourceError`."""
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        try:
            async with self._client().get(
                self._base + path, params=query, headers=headers
            ) as response:
                status = response.status
                body = await response.read()
        except TimeoutError:
            raise SourceUnavailable("no answer in time", step=step) from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise SourceUnavailable(reason, step=step) from None
        if status == 200:
            return body
        try:
            error = _error_decoder.decode(body).error
        except msgspec.DecodeError:
            error = _ErrorBody(message=body[:200].decode(errors="replace"))
        detail = f"HTTP {status} {error.code}: {error.message}".rstrip(": ")
        if status == 410:
            raise _Expired(error.code, detail)
        if status == 429 or status >= 500 or status == 408:
            raise SourceUnavailable(detail, step=step)
        raise SourceRefused(detail, step=step)
