"""The JSON envelope of every request, reply and status message (schema version 1).

A request (register -> hub), published QoS 1 on a ``.../rpc/{method}`` topic with the MQTT 5
properties *Response Topic* and *Correlation Data*::

    {"v": 1, "id": "c0ffee-42", "sent_at": "2026-11-22T10:15:00+01:00", "data": {...}}

A reply (hub -> register), QoS 1 on the request's response topic, same correlation data::

    {"v": 1, "id": "c0ffee-42", "ok": true, "data": {...}}
    {"v": 1, "id": "c0ffee-42", "ok": false,
     "error": {"code": "SCHEMA_INVALID", "message": "...", "retryable": false, "details": {...}}}

``data`` is decoded by the handler of the method into its own typed structure, so that a schema
error names the exact path. Unknown envelope fields are ignored (forward compatibility); unknown
fields inside ``data`` are decided by each method's schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

ENVELOPE_VERSION: Final = 1
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class Request(msgspec.Struct, kw_only=True):
    v: int
    """Envelope schema version; this hub speaks 1."""
    id: RequestId
    """Chosen by the sender; echoed in the reply. Not an idempotency key by itself: methods that
    need one (a transaction) carry it in ``data``."""
    sent_at: str | None = None
    """Sender's clock, RFC 3339, informational only."""
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    """Stable, machine-readable (see docs/protocol.md, error codes)."""
    message: str
    """For humans; wording may change."""
    retryable: bool
    """True: sending the same request again later can succeed."""
    details: dict[str, Any] | None = None


class Reply(msgspec.Struct, kw_only=True, omit_defaults=True):
    v: int = ENVELOPE_VERSION
    id: str | None = None
    """The request's id, or absent when the request was too broken to read one."""
    ok: bool
    data: Any = None
    error: ErrorBody | None = None


class HubStatus(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Retained on ``store/{store}/hub/status``; the hub's last will publishes ``offline``."""

    v: int = ENVELOPE_VERSION
    state: Literal["online", "offline"]
    store_id: str
    hub_id: str
    version: str | None = None
    since: str | None = None
    """RFC 3339 time of the transition, when known (a last will carries none)."""
    reason: Literal["shutdown", "lost"] | None = None


class JournalResend(msgspec.Struct, kw_only=True):
    """Retained on ``store/{store}/hub/journal/resend`` while the hub wants the registers'
    journals again (it salvaged a damaged outbox file and lost items, its last run ended
    without closing the outbox, or a stored sale no longer matches its checksum); an empty
    retained message clears it. Act on each ``id`` once."""

    v: int = ENVELOPE_VERSION
    id: str
    since: str | None
    """RFC 3339: re-send every transaction you handed over at or after this time, by your own
    clock (the hub has already taken a margin off for clocks that differ); null: the whole
    journal."""
    reason: str


class LaneStatus(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A register's retained presence on ``store/{store}/lane/{lane}/status`` (its last will
    publishes ``offline``). Re-published at least every 30 s as the heartbeat."""

    v: int = ENVELOPE_VERSION
    state: Literal["online", "offline"]
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    """The register's stable identity (serial number); else the lane id is the identity."""
    software: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    reason: str | None = None


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def decode_request(payload: bytes) -> Request:
    """Raises msgspec.DecodeError (not JSON) or msgspec.ValidationError (wrong shape)."""
    return _request_decoder.decode(payload)
