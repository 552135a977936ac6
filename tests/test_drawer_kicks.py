"""Cash drawers kicked from their profile: a printer entry names the drawer wired to it
(``drawer = "<drawer profile>"``), and ``device.drawer`` and the console's drawer test send
that drawer's ``ESC p`` (its pin, its pulse). Golden bytes as the printer emulator receives
them over real TCP, from a real hub asked over real MQTT."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge.app import Hub
from edge.bus import Topics
from edge.relay.profiles import DEFAULT_DIR, load_profiles
from edge.settings import SettingsError, settings_from_dict
from edge.sim.printer import PrinterEmulator
from tests.conftest import MosquittoProcess, hub_settings, lane_client, run_hub

TOPICS = Topics("s1")
DRAWER = TOPICS.lane_rpc("lane-1", "device.drawer")

#: ESC p m t1 t2 for each shipped drawer profile, written out by hand: m = 0 pin 2, 1 pin 5;
#: t1, t2 = ON, OFF in units of 2 ms (peripherals.md §1.3). 0x32 = 50 -> 100 ms.
GOLDEN = {
    "Cash drawer, printer pin 2": "1b 70 00 32 32",
    "Cash drawer, printer pin 5": "1b 70 01 32 32",
}
SHIPPED = sorted(p.model for p in load_profiles() if p.kind == "drawer")


def by_hand(pin: int, on_ms: int, off_ms: int) -> bytes:
    """``ESC p`` from the spec's table, independently of devices.receipt."""
    return bytes([0x1B, 0x70, {2: 0x00, 5: 0x01}[pin], on_ms // 2, off_ms // 2])


@pytest.fixture
async def emulator() -> AsyncIterator[PrinterEmulator]:
    async with PrinterEmulator() as printer:
        yield printer


@contextlib.asynccontextmanager
async def hub_with_drawer(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator, **printer: Any
) -> AsyncIterator[Hub]:
    profiles_dir = printer.pop("profiles_dir", "")
    entry = {"name": "front", "host": "127.0.0.1", "port": emulator.port, **printer}
    settings = hub_settings(
        tmp_path,
        broker_port=broker.port,
        devices__printers=[entry],
        devices__profiles_dir=profiles_dir,
    )
    async with run_hub(settings) as hub:
        yield hub


async def kick(lane: Any, command_id: str, **pin: int) -> None:
    reply = await lane.request(DRAWER, {"command_id": command_id, "device": "front", **pin})
    assert reply.ok, msgspec.to_builtins(reply)


def test_every_shipped_drawer_profile_has_golden_bytes() -> None:
    """A drawer profile added without its golden kick is caught here."""
    assert sorted(GOLDEN) == SHIPPED


@pytest.mark.parametrize("model", SHIPPED)
async def test_device_drawer_and_the_console_kick_the_configured_drawer_with_its_bytes(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator, model: str
) -> None:
    """A lane that just says "open the drawer" opens the one wired to that printer, on its
    pin with its pulse: the wrong m opens nothing (or the other till's drawer)."""
    profile = load_profiles().get(model)
    assert profile is not None
    caps = profile.capabilities
    assert caps.drawer_pin is not None
    assert caps.pulse_on_ms is not None
    assert caps.pulse_off_ms is not None
    golden = bytes.fromhex(GOLDEN[model])
    assert golden == by_hand(caps.drawer_pin, caps.pulse_on_ms, caps.pulse_off_ms)
    async with (
        hub_with_drawer(tmp_path, broker, emulator, profile="TM-T88VI", drawer=model) as hub,
        lane_client(hub) as lane,
    ):
        await kick(lane, "t1:drawer")
        await emulator.wait_until(lambda: emulator.drawer_kicks[caps.drawer_pin or 0] == 1)
        assert emulator.unfinished_job == golden
        await hub.printers.test_drawer("front", by="tester")
        await emulator.wait_until(lambda: emulator.drawer_kicks[caps.drawer_pin or 0] == 2)
        assert emulator.unfinished_job == golden + golden, "the console's test: the same kick"
    assert emulator.jobs == []


def write_profiles(directory: Path) -> Path:
    """The shipped TM-T88VI, a TM-T20II that pulses pin 2 only, and a pin-5 drawer (on the
    TM-T88VI) with a 50 ms / 200 ms pulse."""
    directory.mkdir()
    (directory / "tm-t88vi.toml").write_text((DEFAULT_DIR / "epson-tm-t88vi.toml").read_text())
    t20 = (DEFAULT_DIR / "epson-tm-t20ii.toml").read_text()
    (directory / "tm-t20ii.toml").write_text(
        t20.replace("drawer_pins = [2, 5]", "drawer_pins = [2]")
    )
    drawer = (DEFAULT_DIR / "cash-drawer-pin5.toml").read_text()
    drawer = drawer.replace("pulse_on_ms = 100", "pulse_on_ms = 50")
    drawer = drawer.replace("pulse_off_ms = 100", "pulse_off_ms = 200")
    (directory / "drawer.toml").write_text(drawer)
    return directory


async def test_a_lanes_pin_wins_and_gets_the_profile_pulse_only_on_the_drawers_pin(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator
) -> None:
    """No pin, or the drawer's pin: the profile's pulse (50 ms on, 200 ms off). The other pin
    (a second drawer the hub has no profile for): that pin, python-escpos's 100/100 ms."""
    profiles = write_profiles(tmp_path / "profiles")
    async with (
        hub_with_drawer(
            tmp_path, broker, emulator, profile="TM-T88VI",
            drawer="Cash drawer, printer pin 5", profiles_dir=str(profiles),
        ) as hub,
        lane_client(hub) as lane,
    ):  # fmt: skip
        await kick(lane, "t1:drawer")
        await kick(lane, "t2:drawer", pin=5)
        await kick(lane, "t3:drawer", pin=2)
        await emulator.wait_until(lambda: sum(emulator.drawer_kicks.values()) == 3)
    assert emulator.unfinished_job == bytes.fromhex("1b 70 01 19 64 1b 70 01 19 64 1b 70 00 32 32")


async def test_a_printer_without_a_drawer_profile_kicks_pin_2_as_before(
    tmp_path: Path, broker: MosquittoProcess, emulator: PrinterEmulator
) -> None:
    """Registers written before drawer profiles (no pin, or pin 2 or 5) see no change."""
    async with hub_with_drawer(tmp_path, broker, emulator) as hub, lane_client(hub) as lane:
        await kick(lane, "t1:drawer")
        await kick(lane, "t2:drawer", pin=5)
        await emulator.wait_until(lambda: sum(emulator.drawer_kicks.values()) == 2)
    assert emulator.unfinished_job == bytes.fromhex("1b 70 00 32 32 1b 70 01 32 32")


def printers(entry: dict[str, Any], profiles_dir: str = "") -> Any:
    raw = {"devices": {"profiles_dir": profiles_dir, "printers": [{"name": "front", **entry}]}}
    return settings_from_dict(raw, "edge.toml").devices.printers


@pytest.mark.parametrize(
    ("drawer", "reason"),
    [
        ("Cash drawer, printer pin 9", "is no profile, not a cash drawer's"),
        ("TM-T88V", "is a printer profile, not a cash drawer's"),
    ],
)
def test_a_drawer_that_is_not_a_drawer_profile_stops_the_hub_naming_the_key(
    drawer: str, reason: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        printers({"host": "10.0.0.5", "drawer": drawer})
    assert caught.value.key == "devices.printers[0].drawer"
    assert reason in caught.value.reason
    assert str(SHIPPED) in caught.value.reason, "the drawer profiles are listed"


def test_a_drawer_on_a_pin_its_printer_does_not_pulse_is_refused(tmp_path: Path) -> None:
    """The drawer's own profile hangs it on a TM-T88VI; this entry puts it on a printer that
    cannot pulse its pin: nothing would ever open it."""
    profiles = write_profiles(tmp_path / "profiles")
    entry = {"host": "10.0.0.5", "profile": "TM-T20II", "drawer": "Cash drawer, printer pin 5"}
    with pytest.raises(SettingsError) as caught:
        printers(entry, str(profiles))
    assert caught.value.key == "devices.printers[0].drawer"
    assert "wired to pin 5; TM-T20II pulses pins [2]" in caught.value.reason


def test_the_drawer_profile_fills_pin_and_pulse_and_the_entry_wins() -> None:
    named = {"host": "10.0.0.5", "drawer": "cash drawer, printer pin 5"}
    (printer,) = printers(named)
    assert (printer.drawer_pin, printer.drawer_on_ms, printer.drawer_off_ms) == (5, 100, 100)
    (printer,) = printers({**named, "drawer_on_ms": 60})
    assert (printer.drawer_pin, printer.drawer_on_ms) == (5, 60), "what the entry says wins"
    with pytest.raises(SettingsError) as caught:
        printers({**named, "drawer_off_ms": 101})
    assert (caught.value.key, "steps of 2" in caught.value.reason) == (
        "devices.printers[0].drawer_off_ms",
        True,
    )
