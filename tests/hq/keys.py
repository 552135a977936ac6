"""HQ's signing side for the tests: a key pair and documents signed the way HQ signs them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.hq.config import Kind, make_document, sign_document

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def signed(
    key: Ed25519PrivateKey,
    kind: Kind = "config",
    *,
    version: int = 1,
    target: str = "store:s1",
    payload: Any = None,
    issued_at: dt.datetime | None = None,
) -> bytes:
    if payload is None:
        payload = {} if kind == "config" else {"name": "telemetry.now"}
    when = issued_at or dt.datetime.now(dt.UTC)
    doc = make_document(kind, target=target, version=version, issued_at=when, payload=payload)
    return sign_document(key, doc)
