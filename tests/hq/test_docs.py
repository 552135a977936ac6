"""docs/protocol.md §11 and docs/schemas/hq-*.json must say what the HQ link does."""

from __future__ import annotations

import re
from pathlib import Path

from edge.hq.config import HQ_CODES
from edge.hq.schemas import hq_schemas
from edge.schemas import render

ROOT = Path(__file__).resolve().parent.parent.parent


def test_published_hq_schemas_match_the_code() -> None:
    """Regenerate with `python -m edge.hq.schemas`."""
    for name, schema in hq_schemas().items():
        path = ROOT / "docs" / "schemas" / name
        assert path.exists(), f"{path} missing"
        assert path.read_text() == render(schema), f"{path} is stale"


def test_the_hq_code_table_matches_the_code() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    block = text.split("<!-- hq-codes:start -->")[1].split("<!-- hq-codes:end -->")[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| (yes|no) \| (.+?) \|$", block, re.M)
    assert {code: (retry == "yes", meaning) for code, retry, meaning in rows} == HQ_CODES


def test_hq_settings_import_nothing_that_imports_edge_settings() -> None:
    """edge.settings embeds HqSettings: an import of edge.bus from edge.hq.settings would be
    circular (edge.bus.client imports BusSettings) and break every entry point."""
    import subprocess
    import sys

    code = "import edge.hq.settings, sys; assert 'edge.settings' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
