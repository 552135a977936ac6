"""Validate real messages against the published JSON Schemas in docs/schemas/."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    return jsonschema.Draft202012Validator(schema)


def validate(name: str, message: Any) -> None:
    _validator(name).validate(message)


def validate_reply(message: Any) -> None:
    validate("reply.json", message)


def validate_hub_status(message: Any) -> None:
    validate("hub-status.json", message)
