"""Helpers for the NetSuite simulator tests: a settable clock and a small TBA-signing HTTP
client (the client's signer from edge.uplink.netsuite.auth; the simulator verifies with its own
code)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from edge.sim.netsuite.auth import TbaCredential
from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim
from edge.uplink.netsuite.auth import tba_authorization_header

ACCOUNT = "1234567"
TBA = TbaCredential("ck", "cs", "tok", "ts")
START = 1_790_000_000.0


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any

    def error_code(self) -> str:
        return str(self.body["o:errorDetails"][0]["o:errorCode"])

    def error_path(self) -> str | None:
        path = self.body["o:errorDetails"][0].get("o:errorPath")
        return None if path is None else str(path)


@dataclass
class Ns:
    """Real HTTP to the simulator, TBA-signed unless told otherwise."""

    session: aiohttp.ClientSession
    server: NetSuiteServer
    clock: Clock
    credential: TbaCredential = TBA
    nonces: itertools.count[int] = field(default_factory=itertools.count)

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.server.rest_url}{path}{query}"

    def sign(self, method: str, url: str, credential: TbaCredential | None = None) -> str:
        c = credential or self.credential
        return tba_authorization_header(
            method,
            url,
            account_id=ACCOUNT,
            consumer_key=c.consumer_key,
            consumer_secret=c.consumer_secret,
            token=c.token,
            token_secret=c.token_secret,
            nonce=f"nonce{next(self.nonces):06d}",
            timestamp=int(self.clock()),
        )

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        authorization: str | None = "tba",
        raw: bytes | None = None,
    ) -> Reply:
        url = self.url(path, params)
        sent: dict[str, str] = dict(headers or {})
        if authorization == "tba":
            sent["Authorization"] = self.sign(method, url)
        elif authorization is not None:
            sent["Authorization"] = authorization
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, URL(url, encoded=True), data=data, headers=sent
        ) as response:
            text = await response.read()
            parsed = json.loads(text) if text else None
            return Reply(response.status, response.headers, parsed)


def cash_sale(sim: NetSuiteSim, external_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A valid cash sale body for ``sim``: the walk-in customer and two active items."""
    first, second = sim.active_item_ids(2)
    body: dict[str, Any] = {
        "entity": {"id": sim.walk_in_customer_id()},
        "tranDate": "2026-11-20",
        "item": {
            "items": [
                {"item": {"id": str(first)}, "quantity": 2, "rate": 3.5, "amount": 7.0},
                {"item": {"id": str(second)}, "quantity": 1, "rate": 1.25, "amount": 1.25},
            ]
        },
    }
    if external_id is not None:
        body["externalId"] = external_id
    return body | fields
