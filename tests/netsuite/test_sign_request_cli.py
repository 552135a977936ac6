"""`edge netsuite sign-request`: what a technician compares with NetSuite's login audit trail."""

from __future__ import annotations

import pytest

from edge.cli import main
from tests.netsuite.test_auth import (
    ORACLE_CONSUMER_KEY,
    ORACLE_CONSUMER_SECRET,
    ORACLE_NONCE,
    ORACLE_REST_URL,
    ORACLE_TIMESTAMP,
    ORACLE_TOKEN,
    ORACLE_TOKEN_SECRET,
)

ARGS = [
    "netsuite", "sign-request", "--method", "get", "--url", ORACLE_REST_URL,
    "--account", "123456", "--consumer-key", ORACLE_CONSUMER_KEY,
    "--consumer-secret", ORACLE_CONSUMER_SECRET, "--token", ORACLE_TOKEN,
    "--token-secret", ORACLE_TOKEN_SECRET, "--nonce", ORACLE_NONCE,
    "--timestamp", str(ORACLE_TIMESTAMP),
]  # fmt: skip


def test_prints_oracles_published_header_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(ARGS) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith('Authorization: OAuth realm="123456", ')
    assert 'oauth_signature="B5OIWznZ2YP0OB7VrJrGkYsTh%2B8H%2B5T9Hag%2Bo92q0zY%3D"' in out
    assert ORACLE_CONSUMER_SECRET not in out
    assert ORACLE_TOKEN_SECRET not in out


def test_bad_account_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = list(ARGS)
    args[args.index("123456")] = "not an account!"
    assert main(args) == 2
    assert "edge:" in capsys.readouterr().err
