"""Generic HQ HTTPS JSON connector: transactions as a CloudEvents 1.0 JSON batch.

Contract (the same one edge/sim/hq_api.py implements):

``POST {base_url}/v1/events/batch`` with ``Authorization: Bearer <token>``,
``Idempotency-Key: <sha256 of the batch's event ids and attempts>``
(:func:`idempotency_key`) and ``Content-Type: application/cloudevents-batch+json``;
body: a JSON array of CloudEvents (``specversion`` 1.0,
``id`` = the transaction id, ``source`` = ``/stores/{store}/lanes/{lane}``, ``type`` = the
event type, ``time``, ``datacontenttype`` application/json, ``data`` = the transaction). The
cloud is idempotent by event id and answers 200 with one result per event: ``accepted`` (with
``record_id``, ``duplicate``) or ``rejected`` (with ``error``).

Classification of answers:

| answer                          | outcome for each item                               |
|---------------------------------|-----------------------------------------------------|
| 200, result accepted            | Delivered(record_id)                                |
| 200, result rejected            | Rejected(code, message, the whole error)            |
| 429                             | RetryLater(throttled, Retry-After)                  |
| 5xx, 401, 403, 408              | RetryLater(server): auth is config, not the item    |
| other 4xx on a batch of one     | Rejected(HTTP_<status>, body)                       |
| other 4xx on a larger batch     | split in halves, retried in this call (isolates it) |
| connect error, reset            | RetryLater(connection)                              |
| timeout                         | RetryLater(timeout)                                 |

mTLS: pass an ``ssl.SSLContext`` with the client certificate loaded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec

from edge.outbox.policy import Delivered, Rejected, RetryLater
from edge.uplink.base import Outbound, Outcome

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents-batch+json"


def cloudevent(item: Outbound, store_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": item.key,
        "source": f"/stores/{store_id}/lanes/{item.lane}",
        "type": item.event_type,
        "time": dt.datetime.fromtimestamp(item.accepted_at, dt.UTC).isoformat(),
        "datacontenttype": "application/json",
        # The stored canonical JSON, embedded as is (no parse and re-encode per send).
        "data": msgspec.Raw(item.payload),
    }


def idempotency_key(batch: Sequence[Outbound]) -> str:
    """Same items at the same attempt -> same key (a crash re-send is replayed by the cloud);
    a later attempt gets a new key, so a rejection fixed upstream is evaluated again."""
    text = "\n".join(f"{i.key}#{i.attempts}" for i in batch)
    return hashlib.sha256(text.encode()).hexdigest()


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = dt.datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=dt.UTC)
        except ValueError:
            return None
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class HqHttpConnector:
    name = "hq_http"

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        store_id: str,
        max_batch: int = 100,
        max_concurrency: int = 4,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/v1/events/batch"
        self._token = token
        self._store_id = store_id
        self.max_batch = max_batch
        self.max_concurrency = max_concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_concurrency, ssl=self._ssl or True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, batch: Sequence[Outbound]) -> list[Outcome]:
        if not batch:
            return []
        body = msgspec.json.encode([cloudevent(i, self._store_id) for i in batch])
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Idempotency-Key": idempotency_key(batch),
            "Content-Type": CONTENT_TYPE,
        }
        try:
            async with self._client().post(self._url, data=body, headers=headers) as response:
                status = response.status
                text = await response.text()
                retry_after = _retry_after(response.headers)
        except TimeoutError:
            return [RetryLater("no answer in time", "timeout")] * len(batch)
        except (aiohttp.ClientError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return [RetryLater(reason, "connection")] * len(batch)
        if status == 200:
            return self._results(batch, text)
        if status == 429:
            return [RetryLater("throttled (429)", "throttled", retry_after)] * len(batch)
        if status >= 500 or status in (401, 403, 408):
            reason = f"HTTP {status}: {text[:200]}"
            return [RetryLater(reason, "server", retry_after)] * len(batch)
        if len(batch) == 1:
            return [Rejected(f"HTTP_{status}", text[:500], _json_or_text(text))]
        half = len(batch) // 2
        first, second = await asyncio.gather(self.deliver(batch[:half]), self.deliver(batch[half:]))
        return first + second

    def _results(self, batch: Sequence[Outbound], text: str) -> list[Outcome]:
        try:
            results = {r["id"]: r for r in json.loads(text)["results"]}
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"unreadable 200 answer ({exc})"
            return [RetryLater(reason, "server")] * len(batch)
        outcomes: list[Outcome] = []
        for item in batch:
            result = results.get(item.key)
            if result is None:
                outcomes.append(RetryLater("no result for this event in the answer", "server"))
            elif result.get("status") == "accepted":
                outcomes.append(Delivered(str(result.get("record_id", ""))))
            else:
                error = result.get("error") or {}
                outcomes.append(
                    Rejected(
                        str(error.get("code", "REJECTED")),
                        str(error.get("message", "rejected by HQ")),
                        error,
                    )
                )
        return outcomes


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {"body": text[:2000]}
