"""Signed documents from HQ: the wire format, the checks, and the live-changeable config.

Pure: no I/O, no clock (``now`` comes in), no asyncio. The shell (:mod:`edge.hq.link`) feeds
it the bytes of each message and acts on the outcome.

Theory of operation
-------------------
HQ publishes an *envelope* (docs/protocol.md §11)::

    {"doc": "<base64 of the document's bytes>", "sig": "<base64 of the Ed25519 signature>"}

The signature covers the document bytes exactly as carried, so nothing has to be
re-serialised the same way on both sides (:func:`canonical_json` is only how *we* sign). The
document is::

    {"kind": "config" | "command", "target": "store:<id>" | "group:<name>" | "*",
     "version": <int >= 1>, "issued_at": "<RFC 3339 with offset>", "payload": {...}}

:func:`open_document` runs the checks in this order and raises :class:`Refused` with a stable
code at the first that fails (``HQ_CODES``):

1. size, envelope shape, base64                                  → ``MALFORMED``
2. the signature against the pinned key (before the document is even parsed)
                                                                 → ``BAD_SIGNATURE``
3. the document's shape, and that its kind is the topic's kind   → ``MALFORMED``
4. the target names this store, one of its groups, or ``*``      → ``NOT_FOR_THIS_STORE``
5. ``version`` is greater than the last one processed (per kind) → ``STALE_VERSION``
6. a command is not older than ``command_max_age_s``             → ``EXPIRED``

From step 3 on, the refusal carries the document's kind and version (it is authentic), so the
acknowledgement names it; before that nothing from the message is echoed back.
:func:`parse_config` then decodes a config payload (``INVALID_CONFIG`` with the failing key),
:func:`parse_command` a command payload.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.bus.topics import TopicError, segment
from edge.hq.errors import HqKeyError, Refused

Kind = Literal["config", "command"]
KINDS: Final[tuple[Kind, ...]] = ("config", "command")

#: code -> (retryable, meaning). docs/protocol.md §11 lists the same table; a test keeps them
#: equal. "Retryable" means the same document may succeed later; every other refusal needs a
#: new document (a new version) from HQ.
HQ_CODES: Final[dict[str, tuple[bool, str]]] = {
    "MALFORMED": (False, "Not an envelope, not base64, or a signed document of the wrong shape."),
    "BAD_SIGNATURE": (False, "The signature does not verify against the pinned HQ key."),
    "NOT_FOR_THIS_STORE": (False, "The target names neither this store, its groups, nor `*`."),
    "STALE_VERSION": (False, "The version is not above the last one processed (a replay)."),
    "EXPIRED": (False, "A command issued longer ago than the hub's command_max_age_s."),
    "INVALID_CONFIG": (False, "A config key is unknown, mistyped, out of range or not live."),
    "UNKNOWN_COMMAND": (False, "No such command on this hub."),
    "COMMAND_FAILED": (True, "The command ran and failed; a new version may retry it."),
    "APPLY_FAILED": (False, "A component refused the config; the previous one was restored."),
    "NOT_READY": (False, "The hub was not ready in time after applying; rolled back."),
    "INTERNAL": (True, "An unexpected hub error, logged; HQ may send the document again."),
}


# -- wire types ----------------------------------------------------------------------------


class Envelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What HQ publishes on a config or command topic."""

    doc: str
    """Base64 (standard alphabet, padded) of the document's UTF-8 JSON bytes."""
    sig: str
    """Base64 of the 64-byte Ed25519 signature of exactly those bytes."""


Version = Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)]


class Document(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The signed document. ``payload`` stays raw until its kind's parser reads it."""

    kind: Kind
    target: Annotated[str, msgspec.Meta(max_length=80)]
    """``store:<store id>``, ``group:<group name>``, or ``*`` (every store)."""
    version: Version
    """Monotonic per kind across all of HQ (a document for a group and one for a store share
    the sequence): a hub refuses any version not above the last it processed."""
    issued_at: dt.datetime
    payload: msgspec.Raw


class LaneConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Settings for one lane, relayed to it retained on ``store/{store}/lane/{lane}/config``."""

    printer: str | None = None
    """The shared printer this lane prints on (a ``[[devices.printers]]`` name)."""
    scale: str | None = None
    """The shared scale this lane weighs on."""
    receipt_footer: list[Annotated[str, msgspec.Meta(max_length=64)]] | None = None
    idle_lock_s: Annotated[int, msgspec.Meta(ge=0, le=86400)] | None = None
    """Lock the register's screen after this long without activity (0: never)."""
    options: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    """Register-vendor settings the hub relays without interpreting."""


class OutboxLive(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    concurrency: int | None = None
    retry_base_s: float | None = None
    retry_cap_s: float | None = None


class CatalogueLive(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    interval_s: float | None = None


class TelemetryLive(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    interval_s: float | None = None


class HqConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A config document's payload: HQ's whole overlay of the live-changeable keys.

    A key left out falls back to the hub's own settings file; each config replaces the
    previous one entirely (so rolling back is applying the previous one again). Which keys a
    hub can change live depends on the components plugged in (:mod:`edge.hq.apply`); a key
    no component takes is refused (``INVALID_CONFIG``), never silently ignored.
    """

    outbox: OutboxLive | None = None
    catalogue: CatalogueLive | None = None
    telemetry: TelemetryLive | None = None
    lanes: dict[str, LaneConfig] | None = None
    """lane id -> its settings. A lane left out has its retained config cleared."""


class Command(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A command document's payload."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
    args: dict[str, Any] = msgspec.field(default_factory=dict)


Stage = Literal["received", "validated", "applied", "rejected", "rolled_back"]


class Problem(msgspec.Struct, kw_only=True):
    key: str
    reason: str


class Ack(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One stage of one document, published on ``{prefix}/store/{store}/ack`` (QoS 1)."""

    store_id: str
    hub_id: str
    stage: Stage
    ref: str
    """SHA-256 (hex) of the message payload as received: HQ matches acks to what it sent,
    even for a message too broken to name its version."""
    at: str
    kind: Kind | None = None
    """Set once the document is known authentic (the signature verified)."""
    version: int | None = None
    code: str | None = None
    """For ``rejected`` and ``rolled_back``: a code of ``HQ_CODES``."""
    message: str | None = None
    key: str | None = None
    """For ``INVALID_CONFIG``: the first failing key (dotted, e.g. ``outbox.concurrency``)."""
    problems: list[Problem] | None = None
    """For ``INVALID_CONFIG``: every failing key."""
    result: dict[str, Any] | None = None
    """For an ``applied`` command: what it did."""


# -- keys and signing ----------------------------------------------------------------------


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """HQ's pinned key from a file's bytes: raw 32 bytes, base64 of them, or PEM
    (SubjectPublicKeyInfo). Raises :class:`HqKeyError` (never quoting the bytes)."""
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except ValueError as exc:
            raise HqKeyError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise HqKeyError("the PEM key is not an Ed25519 key")
        return key
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        raw = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        return Ed25519PublicKey.from_public_bytes(raw)
    raise HqKeyError("expected an Ed25519 public key: 32 raw bytes, their base64, or PEM")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes we sign."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def make_document(
    kind: Kind,
    *,
    target: str,
    version: int,
    issued_at: dt.datetime,
    payload: Any,
) -> dict[str, Any]:
    """A document as plain data, ready for :func:`sign_document`."""
    return {
        "kind": kind,
        "target": target,
        "version": version,
        "issued_at": issued_at.isoformat(),
        "payload": payload,
    }


def sign_document(private_key: Ed25519PrivateKey, doc: Mapping[str, Any] | bytes) -> bytes:
    """HQ's side: the envelope bytes to publish for ``doc`` (plain data, or exact bytes).

    The signature covers the document bytes as carried in ``doc`` (base64), so a verifier
    never re-serialises anything.
    """
    body = doc if isinstance(doc, bytes) else canonical_json(dict(doc))
    return canonical_json(
        {
            "doc": base64.b64encode(body).decode(),
            "sig": base64.b64encode(private_key.sign(body)).decode(),
        }
    )


def payload_ref(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


# -- the checks ----------------------------------------------------------------------------

_envelope = msgspec.json.Decoder(Envelope)
_document = msgspec.json.Decoder(Document)
_command = msgspec.json.Decoder(Command)
_config = msgspec.json.Decoder(HqConfig)
_lane = msgspec.json.Decoder(LaneConfig)


def open_document(
    payload: bytes,
    *,
    topic_kind: Kind,
    public_key: Ed25519PublicKey,
    store_id: str,
    groups: frozenset[str] | set[str] | tuple[str, ...],
    last_version: int,
    now: dt.datetime,
    command_max_age_s: float,
    max_bytes: int,
) -> Document:
    """Steps 1-6 of the module docstring; raises :class:`Refused` at the first that fails."""
    # 1. envelope
    if len(payload) > max_bytes:
        raise Refused("MALFORMED", f"larger than {max_bytes} bytes")
    try:
        envelope = _envelope.decode(payload)
    except msgspec.DecodeError as exc:
        raise Refused("MALFORMED", f"not an envelope: {_short(exc)}") from None
    try:
        body = base64.b64decode(envelope.doc, validate=True)
        signature = base64.b64decode(envelope.sig, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("MALFORMED", "doc and sig must be standard base64") from None
    # 2. signature, before parsing anything signed
    try:
        public_key.verify(signature, body)
    except InvalidSignature:
        raise Refused("BAD_SIGNATURE", "the signature does not match the pinned HQ key") from None
    # 3. shape
    try:
        doc = _document.decode(body)
    except msgspec.DecodeError as exc:
        raise Refused("MALFORMED", f"signed document: {_short(exc)}") from None
    if doc.issued_at.tzinfo is None:
        raise Refused(
            "MALFORMED", "issued_at needs a UTC offset", kind=doc.kind, version=doc.version
        )
    if doc.kind != topic_kind:
        raise Refused(
            "MALFORMED",
            f"a {doc.kind} document on a {topic_kind} topic",
            kind=doc.kind,
            version=doc.version,
        )
    # 4. target
    if not addressed(doc.target, store_id, groups):
        raise Refused(
            "NOT_FOR_THIS_STORE",
            f"target {doc.target!r} is not this store",
            kind=doc.kind,
            version=doc.version,
        )
    # 5. version
    if doc.version <= last_version:
        raise Refused(
            "STALE_VERSION",
            f"version {doc.version} is not above {last_version}, the last processed",
            kind=doc.kind,
            version=doc.version,
        )
    # 6. age (commands only: a config is state and stays true; a command is an event)
    if doc.kind == "command":
        age = (now - doc.issued_at).total_seconds()
        if age > command_max_age_s:
            raise Refused(
                "EXPIRED",
                f"issued {age:.0f}s ago (limit {command_max_age_s:.0f}s)",
                kind=doc.kind,
                version=doc.version,
            )
    return doc


def addressed(
    target: str, store_id: str, groups: frozenset[str] | set[str] | tuple[str, ...]
) -> bool:
    if target == "*":
        return True
    scope, sep, name = target.partition(":")
    if not sep:
        return False
    if scope == "store":
        return name == store_id
    if scope == "group":
        return name in groups
    return False


def parse_config(doc: Document) -> HqConfig:
    """The config payload; :class:`Refused` ``INVALID_CONFIG`` naming the failing key."""
    try:
        config = _config.decode(doc.payload)
    except msgspec.ValidationError as exc:
        key, reason = _key_of(str(exc))
        if key.startswith("lanes[...]"):
            key, reason = _lane_key(doc.payload, key, reason)
        raise Refused(
            "INVALID_CONFIG", reason, key=key, kind=doc.kind, version=doc.version
        ) from None
    except msgspec.DecodeError as exc:  # pragma: no cover - the document decoded as JSON
        raise Refused("MALFORMED", _short(exc), kind=doc.kind, version=doc.version) from None
    for lane in config.lanes or {}:
        try:
            segment(lane, "lane id")
        except TopicError:
            raise Refused(
                "INVALID_CONFIG",
                "a lane id is 1-64 of [A-Za-z0-9_.-]",
                key=f"lanes.{lane[:64]}",
                kind=doc.kind,
                version=doc.version,
            ) from None
    return config


def parse_command(doc: Document) -> Command:
    try:
        return _command.decode(doc.payload)
    except msgspec.DecodeError as exc:
        raise Refused(
            "MALFORMED", f"command: {_short(exc)}", kind=doc.kind, version=doc.version
        ) from None


def config_keys(config: HqConfig) -> list[str]:
    """The dotted keys ``config`` sets (``lanes`` counts as one key)."""
    keys: list[str] = []
    for section in ("outbox", "catalogue", "telemetry"):
        part = getattr(config, section)
        if part is not None:
            keys.extend(f"{section}.{name}" for name, value in _items(part) if value is not None)
    if config.lanes is not None:
        keys.append("lanes")
    return keys


def config_value(config: HqConfig, key: str) -> Any:
    """The value ``config`` sets for a dotted key, or None when it leaves it to the file."""
    section, _, name = key.partition(".")
    part = getattr(config, section, None)
    if part is None or not name:
        return part
    return getattr(part, name, None)


def _items(struct: msgspec.Struct) -> list[tuple[str, Any]]:
    return [(name, getattr(struct, name)) for name in struct.__struct_fields__]


def _key_of(message: str) -> tuple[str, str]:
    # msgspec: "Expected `int`, got `str` - at `$.outbox.concurrency`"
    reason, sep, where = message.rpartition(" - at `")
    if not sep:  # an error at the top level has no path
        reason, where = message, "$"
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    if reason.startswith("Object contains unknown field"):
        field = reason.split("`")[1] if "`" in reason else ""
        key = f"{key}.{field}" if key else field
        reason = "unknown key (not live-changeable, or a typo)"
    return key, reason


def _lane_key(payload: msgspec.Raw, key: str, reason: str) -> tuple[str, str]:
    """msgspec hides dict keys in its paths (``lanes[...]``): find the failing lane."""
    lanes = msgspec.json.decode(payload).get("lanes")
    if isinstance(lanes, dict):
        for lane, value in lanes.items():
            try:
                _lane.decode(msgspec.json.encode(value))
            except msgspec.ValidationError as exc:
                inner, inner_reason = _key_of(str(exc))
                return f"lanes.{lane[:64]}" + (f".{inner}" if inner else ""), inner_reason
    return key, reason


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."
