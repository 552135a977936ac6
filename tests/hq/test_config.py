"""The pure core of the HQ link: envelope, signature, target, version, config keys."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.hq.config import (
    Document,
    HqConfig,
    Kind,
    config_keys,
    config_value,
    load_public_key,
    open_document,
    parse_command,
    parse_config,
)
from edge.hq.errors import HqKeyError, Refused
from tests.hq.keys import NOW, signed

HQ = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = HQ.public_key()


def open_(
    payload: bytes, *, kind: Kind = "config", last: int = 0, groups: tuple[str, ...] = ("north",)
) -> Document:
    return open_document(
        payload,
        topic_kind=kind,
        public_key=PUBLIC,
        store_id="s1",
        groups=groups,
        last_version=last,
        now=NOW,
        command_max_age_s=3600,
        max_bytes=64 * 1024,
    )


def refused(payload: bytes, **kwargs: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        open_(payload, **kwargs)
    return caught.value


def test_a_signed_config_for_this_store_opens() -> None:
    doc = open_(signed(HQ, version=7, payload={"catalogue": {"interval_s": 60}}))
    assert (doc.kind, doc.version, doc.target) == ("config", 7, "store:s1")
    assert parse_config(doc).catalogue is not None


@pytest.mark.parametrize("target", ["store:s1", "group:north", "*"])
def test_each_form_of_target_reaches_the_store(target: str) -> None:
    assert open_(signed(HQ, target=target)).target == target


@pytest.mark.parametrize("target", ["store:s2", "group:south", "s1", "store:", "all", "group:"])
def test_a_document_for_another_store_or_group_is_refused(target: str) -> None:
    error = refused(signed(HQ, target=target, version=3))
    assert (error.code, error.version) == ("NOT_FOR_THIS_STORE", 3)


def test_a_tampered_document_fails_its_signature() -> None:
    """One changed byte in the signed document (here: the version) must be caught."""
    envelope = json.loads(signed(HQ, version=5))
    body = base64.b64decode(envelope["doc"]).replace(b'"version":5', b'"version":9')
    envelope["doc"] = base64.b64encode(body).decode()
    error = refused(json.dumps(envelope).encode())
    assert error.code == "BAD_SIGNATURE"
    assert error.version is None, "nothing unauthenticated is echoed back"


def test_a_document_signed_by_another_key_is_refused() -> None:
    other = Ed25519PrivateKey.generate()
    assert refused(signed(other)).code == "BAD_SIGNATURE"


@pytest.mark.parametrize("last", [5, 6])
def test_a_replay_or_an_older_version_is_stale(last: int) -> None:
    error = refused(signed(HQ, version=5), last=last)
    assert (error.code, error.version, error.kind) == ("STALE_VERSION", 5, "config")


def test_an_old_command_is_expired_but_an_old_config_is_not() -> None:
    old = NOW - dt.timedelta(hours=2)
    assert refused(signed(HQ, "command", issued_at=old), kind="command").code == "EXPIRED"
    assert open_(signed(HQ, "config", issued_at=old)).version == 1


def test_a_document_on_the_other_kinds_topic_is_malformed() -> None:
    assert refused(signed(HQ, "command"), kind="config").code == "MALFORMED"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"null",
        b"{}",
        b'{"doc": "!!", "sig": "AA=="}',
        b'{"doc": "e30=", "sig": "AA==", "more": 1}',
        b"\xff\xfe",
        b"x" * 70_000,
    ],
)
def test_garbage_is_malformed(payload: bytes) -> None:
    assert refused(payload).code == "MALFORMED"


@pytest.mark.parametrize(
    "doc",
    [
        {
            "kind": "config",
            "target": "*",
            "version": 0,
            "issued_at": NOW.isoformat(),
            "payload": {},
        },
        {
            "kind": "config",
            "target": "*",
            "version": 1,
            "issued_at": "2025-03-01T12:00:00",
            "payload": {},
        },
        {"kind": "nope", "target": "*", "version": 1, "issued_at": NOW.isoformat(), "payload": {}},
        {"kind": "config", "target": "*", "version": 1, "issued_at": NOW.isoformat()},
    ],
)
def test_a_signed_document_of_the_wrong_shape_is_malformed(doc: dict[str, Any]) -> None:
    from edge.hq.config import sign_document

    assert refused(sign_document(HQ, doc)).code == "MALFORMED"


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"outbox": {"concurrency": "eight"}}, "outbox.concurrency"),
        ({"outbox": {"speed": 1}}, "outbox.speed"),
        ({"broker": {"port": 1}}, "broker"),
        ({"lanes": {"lane-1": {"printer": 3}}}, "lanes.lane-1.printer"),
        ({"lanes": {"lane-2": {"idle_lock_s": -1}}}, "lanes.lane-2.idle_lock_s"),
        ({"lanes": {"lane/1": {}}}, "lanes.lane/1"),
        ({"lanes": {"lane-1": {"colour": "red"}}}, "lanes.lane-1.colour"),
    ],
)
def test_an_invalid_config_names_the_failing_key(payload: dict[str, Any], key: str) -> None:
    with pytest.raises(Refused) as caught:
        parse_config(open_(signed(HQ, version=4, payload=payload)))
    assert (caught.value.code, caught.value.key, caught.value.version) == (
        "INVALID_CONFIG",
        key,
        4,
    )


def test_config_keys_lists_what_a_config_sets() -> None:
    config = parse_config(
        open_(signed(HQ, payload={"catalogue": {"interval_s": 30}, "lanes": {"l1": {}}}))
    )
    assert config_keys(config) == ["catalogue.interval_s", "lanes"]
    assert config_value(config, "catalogue.interval_s") == 30
    assert config_value(config, "outbox.concurrency") is None
    assert config_keys(HqConfig()) == []


def test_a_command_payload_is_parsed_or_malformed() -> None:
    doc = open_(signed(HQ, "command", payload={"name": "catalogue.sync"}), kind="command")
    assert parse_command(doc).name == "catalogue.sync"
    bad = open_(signed(HQ, "command", payload={"name": 3}), kind="command")
    with pytest.raises(Refused) as caught:
        parse_command(bad)
    assert caught.value.code == "MALFORMED"


def test_the_pinned_key_loads_from_raw_base64_or_pem() -> None:
    raw = PUBLIC.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = PUBLIC.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for data in (raw, base64.b64encode(raw) + b"\n", pem):
        assert load_public_key(data).public_bytes_raw() == raw
    for bad in (
        b"",
        b"short",
        raw[:31],
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ):
        with pytest.raises(HqKeyError):
            load_public_key(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused_with_a_code_never_an_exception(payload: bytes) -> None:
    with pytest.raises(Refused):
        open_(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["config", "command"]),
    target=st.sampled_from(["store:s1", "*", "group:north"]) | st.text(max_size=10),
    version=st.integers(min_value=-2, max_value=2**60) | json_values,
    payload=json_values,
)
def test_signed_arbitrary_json_is_opened_or_refused_never_raises(
    kind: Kind, target: Any, version: Any, payload: Any
) -> None:
    """Past the signature the document is trusted to be HQ's, not to be well formed."""
    from edge.hq.config import make_document, sign_document

    doc = make_document(kind, target=target, version=0, issued_at=NOW, payload=payload)
    doc["version"] = version
    code = "opened"
    try:
        opened = open_(sign_document(HQ, doc), kind=kind)
        if opened.kind == "config":
            parse_config(opened)
        else:
            parse_command(opened)
    except Refused as error:
        code = error.code
    assert code in {"opened", "MALFORMED", "NOT_FOR_THIS_STORE", "STALE_VERSION", "INVALID_CONFIG"}
