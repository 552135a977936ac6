"""The documentation is part of the product: it must say what the code does."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edge.schemas import all_error_codes, all_schemas, render
from edge.settings import Settings, settings_from_dict
from tests.schemas import validate

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def test_published_schemas_match_the_code() -> None:
    """docs/schemas is what registers code against: it must equal what the hub accepts
    (regenerate with `make schemas`)."""
    for name, schema in all_schemas().items():
        path = ROOT / "docs" / "schemas" / name
        assert path.exists(), f"{path} missing: run make schemas"
        assert path.read_text() == render(schema), f"{path} is stale: run make schemas"


def test_error_code_table_matches_the_code() -> None:
    block = PROTOCOL.split("<!-- error-codes:start -->")[1].split("<!-- error-codes:end -->")[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| (yes|no) \| (.+?) \|$", block, re.M)
    documented = {code: (retry == "yes", meaning) for code, retry, meaning in rows}
    assert documented == all_error_codes()


def test_protocol_examples_are_valid_messages() -> None:
    """Every JSON example in docs/protocol.md is a valid request, reply or status."""
    kinds = {
        "ok": "reply.json",
        "hub_id": "hub-status.json",
        "state": "lane-status.json",
        "txn_id": "transaction.json",
        "id": "request.json",
        "epoch": "catalogue-version.json",
        "certificate": "enroll-response.json",
        "csr": "enroll-request.json",
        "device": "device-status.json",
    }
    checked = 0
    for block in re.findall(r"```json\n(.*?)```", PROTOCOL, re.S):
        message = json.loads(block)
        schema = next(name for key, name in kinds.items() if key in message)
        validate(schema, message)
        checked += 1
    assert checked >= 4


def test_operations_example_config_is_valid_and_shows_the_defaults() -> None:
    """The annotated example in docs/operations.md must load, and show the real defaults."""
    text = (ROOT / "docs" / "operations.md").read_text()
    toml = re.search(r"```toml\n(.*?)```", text, re.S)
    assert toml is not None
    import tomllib

    raw = tomllib.loads(toml.group(1))
    documented = settings_from_dict(raw, "docs/operations.md")
    defaults = Settings()
    for section in (
        "broker",
        "bus",
        "outbox",
        "uplink",
        "catalogue",
        "devices",
        "lanes",
        "discovery",
        "http",
        "shutdown",
        "log",
    ):
        assert getattr(documented, section) == getattr(defaults, section), section
