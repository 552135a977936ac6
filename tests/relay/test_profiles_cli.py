"""`edge device profiles`, human and --json, through the real `edge` entry point and without a
hub: the technician's list of the device models the hub knows, read from the files."""

from __future__ import annotations

import json
from pathlib import Path

from edge.relay.profiles import DEFAULT_DIR, load_profiles
from tests.test_cli import _edge

SHIPPED = load_profiles()


async def test_profiles_are_listed_without_a_hub_human_and_json(tmp_path: Path) -> None:
    env = {"EDGE__STATE_DIR": str(tmp_path / "state")}  # no hub runs: nothing to reach
    code, out, err = await _edge("device", "profiles", env=env)
    assert code == 0, err
    assert f"{len(SHIPPED)} device profiles in {DEFAULT_DIR}" in out
    for profile in SHIPPED:
        assert profile.model in out
    assert "kick 1b 70 00 32 32" in out, "a drawer shows the bytes that open it"
    assert "layout TSP600" in out, "the python-escpos profile a printer is laid out with"

    code, out, _ = await _edge("device", "profiles", "--json", env=env)
    assert code == 0
    listed = json.loads(out)
    assert listed["profiles_dir"] == str(DEFAULT_DIR)
    rows = {row["model"]: row for row in listed["profiles"]}
    assert set(rows) == {p.model for p in SHIPPED}
    for row in rows.values():
        assert Path(row["file"]).parent == DEFAULT_DIR
        assert {"vendor", "kind", "protocol", "capabilities", "uncertain", "key"} <= set(row)
    tsp = rows["TSP143"]
    assert (tsp["vendor"], tsp["protocol"]) == ("Star Micronics", "escpos")
    assert tsp["capabilities"]["escpos_profile"] == "TSP600"
    assert "columns" in tsp["uncertain"]
    assert rows["Cash drawer, printer pin 2"]["drawer_kick"] == "1b 70 00 32 32"


async def test_kind_filters_and_a_broken_profiles_dir_names_the_file(tmp_path: Path) -> None:
    env = {"EDGE__STATE_DIR": str(tmp_path / "state")}
    code, out, _ = await _edge("device", "profiles", "--kind", "scale", "--json", env=env)
    assert code == 0
    kinds = {row["kind"] for row in json.loads(out)["profiles"]}
    assert kinds == {"scale"}
    code, out, _ = await _edge("device", "profiles", "--kind", "drawer", env=env)
    assert code == 0
    assert "Cash drawer, printer pin 2" in out
    assert "epson-tm-t88v.toml" not in out
    code, _, err = await _edge("device", "profiles", "--kind", "toaster", env=env)
    assert code == 2
    assert "invalid choice" in err

    mine = tmp_path / "profiles"
    mine.mkdir()
    (mine / "typo.toml").write_text("schema = 1\nvendr = 'x'\n")
    env["EDGE__DEVICES__PROFILES_DIR"] = str(mine)
    code, out, err = await _edge("device", "profiles", env=env)
    assert code == 2, out
    assert f"{mine / 'typo.toml'}: vendr: unknown key" in err
