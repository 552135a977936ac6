"""Device profiles (firmware_profiles/): every shipped file is valid, a malformed one is
refused naming the file and the key, and a device naming a profile gets its defaults."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from escpos.capabilities import CAPABILITIES

from devices.escpos_preview import DrawerKicked, EscPosDecoder
from edge.relay.profiles import (
    DEFAULT_DIR,
    ProfileError,
    drawer_kick,
    fill_from_profiles,
    load_profile,
    load_profiles,
)
from edge.settings import SettingsError, settings_from_dict

SHIPPED = sorted(DEFAULT_DIR.glob("*.toml"))

#: The codec in devices/ behind each protocol a profile may name.
CODECS = {
    "escpos": "devices.escpos_status",
    "toledo": "devices.scale_toledo",
    "magellan": "devices.scale_magellan",
    "cas": "devices.scale_cas",
    "scp01": "devices.scale_scp01",
    "epson-dmd": "devices.display_dmd",
}


def test_the_required_models_are_there() -> None:
    """Issue 6 item 5: at least 8 real models, printers, scales, a pole display, a drawer."""
    profiles = load_profiles()
    assert len(profiles) >= 8
    kinds = {(p.kind, p.protocol) for p in profiles}
    assert {("printer", "escpos"), ("scale", "toledo"), ("scale", "magellan")} <= kinds
    assert {("display", "epson-dmd"), ("scale", "cas"), ("drawer", "escpos")} <= kinds
    for name in ("TM-T88V", "TM-T88VI", "TM-m30", "TSP143", "8217", "Magellan 8400", "PD-II",
                 "DM-D110", "dm-d210", "cash drawer"):  # fmt: skip
        assert profiles.get(name) is not None, name
    star = profiles.get("TSP143")
    assert star is not None
    assert star.protocol == "escpos", "the TSP143 is driven in ESC/POS emulation"
    assert any(step.setting == "emulation" for step in star.provisioning)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_profile_is_valid(path: Path) -> None:
    """Adding a model is adding a file: each one is loaded with the full checks."""
    profile = load_profile(path)
    __import__(CODECS[profile.protocol])
    if profile.kind == "printer":
        assert profile.capabilities.escpos_profile in CAPABILITIES["profiles"], (
            "the hub lays receipts out with this python-escpos profile: it must exist"
        )
    probe = profile.identity.probe
    if probe is not None:
        bytes.fromhex(probe.request)
        re.compile(probe.answer)
    for step in profile.provisioning:
        assert step.how


def test_a_probe_answer_matches_what_the_codec_emits() -> None:
    """The profile's probe must recognise the real answer (the codec's own golden frames)."""
    from devices.scale_magellan import encode_weight_frame

    profiles = load_profiles()
    magellan = profiles.get("Magellan 8400")
    assert magellan is not None
    assert magellan.identity.probe is not None
    frame = encode_weight_frame(Decimal("1.234"), monitor=True)
    assert re.match(magellan.identity.probe.answer, frame.decode("latin-1"))
    printer = profiles.get("TM-T88V")
    assert printer is not None
    assert printer.identity.probe is not None
    assert re.match(printer.identity.probe.answer, "\x12")
    assert not re.match(printer.identity.probe.answer, "\x13")


GOOD = (DEFAULT_DIR / "epson-dm-d110.toml").read_text()


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (("columns = 20", "colums = 20"), "capabilities.colums", "unknown key"),
        (("rows = 2", 'rows = "two"'), "capabilities.rows", "Expected `int | null`"),
        (('kind = "display"', 'kind = "toaster"'), "kind", "Invalid enum value"),
        (("schema = 1\n", ""), "schema", "missing"),
        (("rows = 2", "rows = 0"), "capabilities.rows", "must be 1-255"),
        (("rows = 2\n", ""), "capabilities.rows", "a display profile needs it"),
        (
            ('uncertain = ["code_pages"]', 'uncertain = ["cutter"]'),
            "capabilities.uncertain[0]",
            "'cutter' is not a key set",
        ),
        (('"0" = "PC437"', '"x" = "PC437"'), "capabilities.code_pages.x", "must be a number"),
        (('protocol = "epson-dmd"', 'protocol = "toledo"'), "protocol", "a display speaks"),
    ],
)
def test_a_malformed_profile_is_refused_naming_file_and_key(
    tmp_path: Path, change: tuple[str, str], key: str, reason: str
) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as caught:
        load_profiles(tmp_path)
    assert (caught.value.path, caught.value.key) == (path, key)
    assert reason in caught.value.reason
    assert str(path) in str(caught.value)


def test_not_toml_and_a_model_named_twice_are_refused(tmp_path: Path) -> None:
    bad = write(tmp_path, "schema = [", "bad.toml")
    with pytest.raises(ProfileError, match="not valid TOML") as caught:
        load_profiles(tmp_path)
    assert caught.value.path == bad
    bad.unlink()
    write(tmp_path, GOOD, "a.toml")
    write(tmp_path, GOOD.replace('model = "DM-D110"', 'model = "DM-D210"'), "b.toml")
    with pytest.raises(ProfileError, match="already the model of") as caught:
        load_profiles(tmp_path)
    assert caught.value.path == tmp_path / "b.toml"


def settings(devices: dict[str, Any]) -> Any:
    return settings_from_dict({"devices": devices}, "edge.toml").devices


def test_a_display_naming_a_profile_gets_its_geometry_and_line() -> None:
    devices = settings(
        {"displays": [{"name": "pole", "port": "/dev/ttyUSB1", "profile": "DM-D210"}]}
    )
    display = devices.displays[0]
    assert (display.columns, display.rows, display.baudrate, display.bytesize) == (20, 2, 9600, 8)
    assert (display.parity, display.stopbits, display.profile) == ("N", 1, "DM-D210")


def test_a_scale_naming_a_profile_gets_its_serial_settings_and_its_own_win() -> None:
    entry = {"name": "deli", "port": "/dev/ttyS0", "profile": "Magellan 8400", "parity": "O"}
    scale = settings({"scales": [entry]}).scales[0]
    assert (scale.protocol, scale.baudrate, scale.bytesize, scale.stopbits) == (
        "magellan",
        9600,
        7,
        1,
    )
    assert scale.parity == "O", "what the entry says wins over the profile"


def test_a_printer_naming_a_profile_gets_its_columns_and_escpos_profile() -> None:
    printers = settings(
        {
            "printers": [
                {"name": "front", "host": "10.0.0.5", "profile": "TM-T20II"},
                {"name": "back", "host": "10.0.0.6", "profile": "TM-T20II", "columns": 42},
                {"name": "old", "host": "10.0.0.7", "profile": "TM-U220"},
            ]
        }
    ).printers
    assert [(p.columns, p.profile, p.port) for p in printers] == [
        (48, "TM-T20II", 9100),
        (42, "TM-T20II", 9100),
        (42, "TM-U220", 9100),  # a python-escpos profile name, as before: left alone
    ]


def test_an_unknown_or_mistyped_profile_is_a_settings_error() -> None:
    with pytest.raises(SettingsError) as caught:
        settings({"displays": [{"name": "pole", "port": "/dev/x", "profile": "DM-D999"}]})
    assert caught.value.key == "devices.displays[0].profile"
    assert "DM-D110" in caught.value.reason, "the known models are listed"
    with pytest.raises(SettingsError) as caught:
        settings({"scales": [{"name": "deli", "port": "/dev/x", "profile": "TM-T88V"}]})
    assert "is a printer profile" in caught.value.reason


def test_profiles_dir_is_read_and_a_broken_file_there_names_itself(tmp_path: Path) -> None:
    raw = tomllib.loads(GOOD)
    text = GOOD.replace('model = "DM-D110"', 'model = "Pole-4x40"').replace(
        "columns = 20", "columns = 40"
    )
    write(tmp_path, text.replace('also_known_as = ["DM-D210"]\n', ""), "pole.toml")
    assert raw["model"] == "DM-D110"
    entry = {"name": "pole", "port": "/dev/x", "profile": "pole-4x40"}
    devices = settings({"profiles_dir": str(tmp_path), "displays": [entry]})
    assert devices.displays[0].columns == 40
    write(tmp_path, "schema = 1\nvendr = 'x'\n", "typo.toml")
    with pytest.raises(SettingsError) as caught:
        settings({"profiles_dir": str(tmp_path), "displays": [entry]})
    assert (caught.value.source, caught.value.key) == (str(tmp_path / "typo.toml"), "vendr")


def test_nothing_is_read_when_no_device_names_a_profile(tmp_path: Path) -> None:
    raw = {"devices": {"profiles_dir": str(tmp_path / "missing"), "scales": []}}
    assert fill_from_profiles(raw) == raw


#: Golden drawer-kick bytes per shipped drawer profile: ESC p m t1 t2, m = 0 pin 2 / 1 pin 5,
#: t x 2 ms (peripherals.md §1.3; python-escpos cashdraw(2) is 1b 70 00 32 32).
DRAWER_KICKS = {
    "Cash drawer, printer pin 2": "1b 70 00 32 32",
    "Cash drawer, printer pin 5": "1b 70 01 32 32",
}

DRAWER = (DEFAULT_DIR / "cash-drawer-pin2.toml").read_text()
PRINTER = (DEFAULT_DIR / "epson-tm-t88vi.toml").read_text()


def test_drawer_kick_bytes_per_profile() -> None:
    """The bytes that open each shipped drawer, and the printer's side (the emulator's
    decoder) reading them as a kick on the drawer's pin: a wrong m opens nothing, or the
    other till's drawer."""
    drawers = [p for p in load_profiles() if p.kind == "drawer"]
    assert {p.model for p in drawers} == set(DRAWER_KICKS)
    for profile in drawers:
        wire = drawer_kick(profile)
        assert wire == bytes.fromhex(DRAWER_KICKS[profile.model]), profile.model
        assert EscPosDecoder().feed(wire) == [DrawerKicked(profile.capabilities.drawer_pin or 0)]


@pytest.mark.parametrize(
    ("pin", "on_ms", "off_ms", "wire"),
    [
        (2, 100, 100, "1b 70 00 32 32"),
        (5, 100, 100, "1b 70 01 32 32"),
        (5, 50, 200, "1b 70 01 19 64"),
    ],
)
def test_a_drawer_on_pin_5_or_with_its_own_pulse_gets_its_bytes(
    tmp_path: Path, pin: int, on_ms: int, off_ms: int, wire: str
) -> None:
    write(tmp_path, PRINTER, "printer.toml")
    text = DRAWER.replace("drawer_pin = 2", f"drawer_pin = {pin}")
    text = text.replace("pulse_on_ms = 100", f"pulse_on_ms = {on_ms}")
    write(tmp_path, text.replace("pulse_off_ms = 100", f"pulse_off_ms = {off_ms}"))
    drawer = load_profiles(tmp_path).get("cash drawer")
    assert drawer is not None
    assert drawer_kick(drawer) == bytes.fromhex(wire)


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        (('printer = "TM-T88VI"', 'printer = "TM-T99"'), "capabilities.printer", "no printer"),
        (("pulse_on_ms = 100", "pulse_on_ms = 101"), "capabilities.pulse_on_ms", "steps of 2"),
        (("pulse_off_ms = 100", "pulse_off_ms = 600"), "capabilities.pulse_off_ms", "2..510"),
        (("drawer_pin = 2\n", ""), "capabilities.drawer_pin", "a drawer profile needs it"),
        (("drawer_pin = 2", "drawer_pin = 3"), "capabilities.drawer_pin", "Invalid enum"),
    ],
)
def test_a_drawer_that_no_printer_can_pulse_is_refused(
    tmp_path: Path, change: tuple[str, str], key: str, reason: str
) -> None:
    write(tmp_path, PRINTER, "printer.toml")
    old, new = change
    assert old in DRAWER
    path = write(tmp_path, DRAWER.replace(old, new, 1))
    with pytest.raises(ProfileError) as caught:
        load_profiles(tmp_path)
    assert (caught.value.path, caught.value.key) == (path, key)
    assert reason in caught.value.reason


def test_a_drawer_on_a_pin_its_printer_does_not_pulse_is_refused(tmp_path: Path) -> None:
    write(tmp_path, PRINTER.replace("drawer_pins = [2, 5]", "drawer_pins = [5]"), "printer.toml")
    path = write(tmp_path, DRAWER)
    with pytest.raises(ProfileError, match="not pin 2") as caught:
        load_profiles(tmp_path)
    assert (caught.value.path, caught.value.key) == (path, "capabilities.drawer_pin")
