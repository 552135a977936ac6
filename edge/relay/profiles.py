"""Device profiles: one TOML file per device model in ``firmware_profiles/`` (design.md,
"Device profiles").

Theory of operation
-------------------
A profile says what a model *is*, so that a technician does not have to: how to recognise it
(USB ids, mDNS TXT, a serial probe and the answer to expect), its transport defaults (TCP
port; baud rate, data bits, parity, stop bits), the protocol the hub speaks to it, its
capabilities (paper width, columns, cutter, drawer pins, code pages, a display's rows and
columns, a scale's capacity and division, a cash drawer's pin and pulse), the firmware versions
we know with their quirks, and the settings applied when it is provisioned.

*A cash drawer* (kind ``drawer``) has no protocol of its own: it hangs on a printer's
drawer-kick connector and opens when the printer pulses its pin (``ESC p``, peripherals.md
§1.3). Its profile names the pin (2 or 5), the pulse (on and off, in ms) and the printer
profile it hangs on; :func:`drawer_kick` gives the bytes the printer is sent.

Every fact carries its source; a section's ``uncertain`` list names the keys of that section
that no primary source confirms (peripherals.md tags them [S] or [NV]), so nobody mistakes a
guess for a measurement. Adding a model is adding a file: the tests validate every file.

1. :func:`load_profiles` reads every ``*.toml`` of a directory; unknown keys, wrong types,
   a model named twice, an ``uncertain`` entry naming a key that is not set, a profile that
   lacks what its kind needs: :class:`ProfileError` naming the file and the key.
   Across files: a drawer's ``printer`` must be a printer profile whose ``drawer_pins`` hold
   the drawer's pin.
2. :meth:`Profiles.get` looks a model up by name (case-insensitive; ``also_known_as`` too).
3. :func:`fill_from_profiles` runs on the raw settings before they are typed
   (:func:`edge.settings.settings_from_dict`): a ``[[devices.printers]]``, ``scales`` or
   ``displays`` entry naming a ``profile`` gets every setting it leaves out from that profile
   (:data:`FILLED`); what the entry says itself always wins. A printer's ``profile`` may also
   be a python-escpos profile name, as before: only a name that is a firmware profile is
   replaced by that profile's ``escpos_profile``. A printer's ``drawer`` names the drawer
   profile of the cash drawer wired to it: its pin and pulse fill ``drawer_pin``,
   ``drawer_on_ms`` and ``drawer_off_ms`` (:data:`FILLED` ``"drawer"``); a name that is not a
   drawer profile, or a drawer on a pin the printer's own profile does not pulse, is a
   :class:`ProfileError` naming ``devices.printers[i].drawer``.

Pure apart from reading the directory: no asyncio, no sockets.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from devices.receipt import encode_drawer_kick

__all__ = [
    "DEFAULT_DIR",
    "FILLED",
    "PROTOCOLS_OF_KIND",
    "Capabilities",
    "Firmware",
    "Identity",
    "Profile",
    "ProfileError",
    "Profiles",
    "ProvisioningStep",
    "SerialProbe",
    "Transport",
    "UsbId",
    "drawer_kick",
    "fill_from_profiles",
    "load_profiles",
]


def _shipped_profiles() -> Path:
    """firmware_profiles/ of a source checkout (editable install), else the copy a wheel
    installs under ``<prefix>/share/store-edge/`` (pyproject's data-files)."""
    source = Path(__file__).resolve().parents[2] / "firmware_profiles"
    installed = Path(sys.prefix) / "share" / "store-edge" / "firmware_profiles"
    return source if source.is_dir() else installed


DEFAULT_DIR: Final = _shipped_profiles()
"""The profiles shipped with the hub (``devices.profiles_dir`` overrides it)."""


class ProfileError(Exception):
    """A profile file, or a device entry's ``profile``, cannot be used. Not retryable: fix the
    file. ``path`` is the profile file (None when the fault is in the hub's settings), ``key``
    the dotted key."""

    def __init__(self, path: Path | None, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = ": ".join(part for part in (str(path) if path else "", key) if part)
        super().__init__(f"{where}: {reason}" if where else reason)


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class _Sourced(_Strict, frozen=True, kw_only=True):
    source: str = ""
    """Where the section's facts come from (a manual, peripherals.md §, a library)."""
    uncertain: list[str] = msgspec.field(default_factory=list)
    """Keys of this section no primary source confirms: check them on the device."""


HexId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{4}$")]
HexBytes = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{2}( [0-9A-Fa-f]{2})*$")]
Decimal = Annotated[str, msgspec.Meta(pattern=r"^[0-9]+(\.[0-9]+)?$")]


class UsbId(_Strict, frozen=True, kw_only=True):
    vid: HexId
    """Lower-case hex, 4 digits."""
    pid: HexId
    note: str = ""


class MdnsIdentity(_Strict, frozen=True, kw_only=True):
    service: str
    """DNS-SD type, e.g. ``_pdl-datastream._tcp``."""
    txt: dict[str, str] = msgspec.field(default_factory=dict)
    """TXT keys and values to expect (a value is a regular expression)."""


class SerialProbe(_Strict, frozen=True, kw_only=True):
    request: HexBytes
    """Bytes to send, in hex: ``"57"`` for ``W``."""
    answer: str
    """A regular expression the answer (bytes read as latin-1) must match."""
    note: str = ""


class Identity(_Sourced, frozen=True, kw_only=True):
    usb: list[UsbId] = msgspec.field(default_factory=list)
    mdns: MdnsIdentity | None = None
    probe: SerialProbe | None = None
    notes: str = ""


Link = Literal["tcp", "serial", "usb", "usb-serial", "bluetooth", "drawer-kick"]
"""``drawer-kick``: wired to a printer's drawer-kick connector (a cash drawer)."""


class Transport(_Sourced, frozen=True, kw_only=True):
    links: list[Link]
    """How the model can be connected (the hub drives ``tcp`` printers and ``serial`` /
    ``usb-serial`` scales and displays)."""
    tcp_port: int | None = None
    baudrate: int | None = None
    bytesize: Literal[7, 8] | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None


class Capabilities(_Sourced, frozen=True, kw_only=True):
    # printers
    escpos_profile: str | None = None
    """The python-escpos / escpos-printer-db profile the hub lays receipts out with."""
    paper_width_mm: int | None = None
    print_width_dots: int | None = None
    cutter: Literal["none", "partial", "full", "full-and-partial"] | None = None
    drawer_pins: list[Literal[2, 5]] = msgspec.field(default_factory=list)
    code_pages: dict[str, str] = msgspec.field(default_factory=dict)
    """``ESC t n`` -> code page, as the manufacturer names it."""
    # printers (font A) and displays
    columns: int | None = None
    rows: int | None = None
    # scales
    unit: Literal["kg", "lb"] | None = None
    capacity: Decimal | None = None
    """In ``unit``."""
    division: Decimal | None = None
    """The smallest weight step (``e``), in ``unit``."""
    zero: bool | None = None
    """The host can zero the scale."""
    tare: bool | None = None
    barcode_scanner: bool | None = None
    # cash drawers
    drawer_pin: Literal[2, 5] | None = None
    """The drawer-kick connector pin the drawer's solenoid is wired to."""
    pulse_on_ms: int | None = None
    """``ESC p`` ON time: an even number of ms, 2..510."""
    pulse_off_ms: int | None = None
    printer: str | None = None
    """The printer profile (model) the drawer hangs on."""


class Firmware(_Strict, frozen=True, kw_only=True):
    version: str
    quirks: list[str] = msgspec.field(default_factory=list)
    source: str = ""
    uncertain: bool = False


class ProvisioningStep(_Strict, frozen=True, kw_only=True):
    setting: str
    value: str | int | bool
    by: Literal["hub", "technician"]
    """``hub``: the hub applies it (every time it connects); ``technician``: set on the device
    (setup menu, DIP switch, utility) when it is installed."""
    how: str
    source: str = ""
    uncertain: bool = False


Kind = Literal["printer", "scale", "display", "drawer"]
Protocol = Literal["escpos", "toledo", "magellan", "cas", "scp01", "epson-dmd"]

#: The protocols each kind speaks: a scale profile naming a display's protocol is refused when
#: the file is loaded, not when a hub first names it. The scale protocols are those of
#: ``edge.relay.scales.PROTOCOLS`` (tests/test_scales.py keeps them equal).
PROTOCOLS_OF_KIND: Final[dict[Kind, frozenset[str]]] = {
    "printer": frozenset({"escpos"}),
    "drawer": frozenset({"escpos"}),
    "display": frozenset({"epson-dmd"}),
    "scale": frozenset({"toledo", "magellan", "cas", "scp01"}),
}


class Profile(_Strict, frozen=True, kw_only=True):
    schema: Literal[1]
    vendor: str
    model: str
    kind: Kind
    protocol: Protocol
    summary: str
    also_known_as: list[str] = msgspec.field(default_factory=list)
    """Other model names this profile answers to (same command set, same defaults)."""
    sources: list[str]
    identity: Identity
    transport: Transport
    capabilities: Capabilities
    firmware: list[Firmware] = msgspec.field(default_factory=list)
    provisioning: list[ProvisioningStep] = msgspec.field(default_factory=list)


#: What each kind needs from its profile, checked at load.
_REQUIRED: Final[dict[Kind, tuple[tuple[str, str], ...]]] = {
    "printer": (("capabilities", "escpos_profile"), ("capabilities", "columns")),
    "scale": (("capabilities", "unit"), ("transport", "baudrate")),
    "display": (("capabilities", "columns"), ("capabilities", "rows"), ("transport", "baudrate")),
    "drawer": (
        ("capabilities", "drawer_pin"),
        ("capabilities", "pulse_on_ms"),
        ("capabilities", "pulse_off_ms"),
        ("capabilities", "printer"),
    ),
}

#: settings key <- where it comes from in the profile, per kind (a setting the device's entry
#: leaves out is filled in; what it says itself wins).
FILLED: Final[dict[Kind, dict[str, Callable[[Profile], Any]]]] = {
    "printer": {
        "port": lambda p: p.transport.tcp_port,
        "columns": lambda p: p.capabilities.columns,
    },
    "scale": {
        "protocol": lambda p: p.protocol,
        "unit": lambda p: p.capabilities.unit,
        "baudrate": lambda p: p.transport.baudrate,
        "bytesize": lambda p: p.transport.bytesize,
        "parity": lambda p: p.transport.parity,
        "stopbits": lambda p: p.transport.stopbits,
    },
    "display": {
        "protocol": lambda p: p.protocol,
        "columns": lambda p: p.capabilities.columns,
        "rows": lambda p: p.capabilities.rows,
        "baudrate": lambda p: p.transport.baudrate,
        "bytesize": lambda p: p.transport.bytesize,
        "parity": lambda p: p.transport.parity,
        "stopbits": lambda p: p.transport.stopbits,
    },
    # A printer's entry naming the drawer wired to it (``drawer = "<drawer model>"``).
    "drawer": {
        "drawer_pin": lambda p: p.capabilities.drawer_pin,
        "drawer_on_ms": lambda p: p.capabilities.pulse_on_ms,
        "drawer_off_ms": lambda p: p.capabilities.pulse_off_ms,
    },
}

_SECTIONS: Final[dict[Kind, str]] = {
    "printer": "printers",
    "scale": "scales",
    "display": "displays",
}


class Profiles:
    """The loaded profiles, looked up by model name."""

    def __init__(self, profiles: Mapping[Path, Profile]) -> None:
        self.by_path = dict(profiles)
        self._by_name: dict[str, Profile] = {}
        self._where: dict[str, Path] = {}
        for path, profile in sorted(self.by_path.items()):
            for name in (profile.model, *profile.also_known_as):
                key = name.casefold()
                if key in self._by_name:
                    raise ProfileError(
                        path, "model", f"{name!r} is already the model of {self._where[key]}"
                    )
                self._by_name[key] = profile
                self._where[key] = path
        for path, profile in sorted(self.by_path.items()):
            if profile.kind == "drawer":
                self._check_drawer(path, profile)

    def _check_drawer(self, path: Path, drawer: Profile) -> None:
        caps = drawer.capabilities
        assert caps.printer is not None  # checked at load (_REQUIRED)
        printer = self.get(caps.printer)
        if printer is None or printer.kind != "printer":
            known = sorted(p.model for p in self if p.kind == "printer")
            reason = f"no printer profile {caps.printer!r} (known: {known})"
            raise ProfileError(path, "capabilities.printer", reason)
        if caps.drawer_pin not in printer.capabilities.drawer_pins:
            reason = (
                f"{printer.model} pulses pins {printer.capabilities.drawer_pins}, "
                f"not pin {caps.drawer_pin}"
            )
            raise ProfileError(path, "capabilities.drawer_pin", reason)

    def path_of(self, profile: Profile) -> Path:
        """The file ``profile`` was loaded from."""
        return self._where[profile.model.casefold()]

    def get(self, model: str) -> Profile | None:
        return self._by_name.get(model.casefold())

    def __iter__(self) -> Any:
        return iter(sorted(self.by_path.values(), key=lambda p: (p.kind, p.vendor, p.model)))

    def __len__(self) -> int:
        return len(self.by_path)


def drawer_kick(profile: Profile) -> bytes:
    """The bytes a cash drawer's printer is sent to open it: ``ESC p m t1 t2`` with the
    drawer's pin and pulse (peripherals.md §1.3). Raises ProfileError for a profile that is
    not a drawer's."""
    caps = profile.capabilities
    if profile.kind != "drawer" or caps.drawer_pin is None:
        raise ProfileError(None, "kind", f"{profile.model} is a {profile.kind}, not a drawer")
    assert caps.pulse_on_ms is not None  # checked at load (_REQUIRED)
    assert caps.pulse_off_ms is not None
    return encode_drawer_kick(caps.drawer_pin, on_ms=caps.pulse_on_ms, off_ms=caps.pulse_off_ms)


def load_profile(path: Path) -> Profile:
    """One profile file, validated (module docstring, step 1)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(path, "", f"not valid TOML: {exc}") from None
    try:
        profile = msgspec.convert(raw, Profile)
    except msgspec.ValidationError as exc:
        key, reason = _split_msgspec_error(str(exc))
        raise ProfileError(path, key, reason) from None
    _check(path, profile)
    return profile


def load_profiles(directory: Path | str = DEFAULT_DIR) -> Profiles:
    """Every ``*.toml`` in ``directory`` (module docstring, step 1)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ProfileError(directory, "", "no such directory of device profiles")
    return Profiles({path: load_profile(path) for path in sorted(directory.glob("*.toml"))})


def fill_from_profiles(raw: Mapping[str, Any], profiles: Profiles | None = None) -> dict[str, Any]:
    """The raw settings with each device's ``profile`` applied (module docstring, step 3).

    ``profiles`` defaults to ``devices.profiles_dir`` (or :data:`DEFAULT_DIR`), read only when a
    device names a profile. Raises :class:`ProfileError` (``path`` None) for a profile that
    does not exist or is of another kind, and for a malformed profile file.
    """
    devices = raw.get("devices")
    if not isinstance(devices, Mapping):
        return dict(raw)
    named = any(
        isinstance(entry, Mapping)
        and (isinstance(entry.get("profile"), str) or isinstance(entry.get("drawer"), str))
        for section in _SECTIONS.values()
        if isinstance(devices.get(section), list)
        for entry in devices[section]
    )
    if not named:
        return dict(raw)
    if profiles is None:
        where = devices.get("profiles_dir") or DEFAULT_DIR
        profiles = load_profiles(Path(where))
    filled = dict(devices)
    for kind, section in _SECTIONS.items():
        entries = devices.get(section)
        if isinstance(entries, list):
            filled[section] = [
                _fill(kind, f"devices.{section}[{index}]", entry, profiles)
                for index, entry in enumerate(entries)
            ]
    return {**raw, "devices": filled}


# -- inside ----------------------------------------------------------------------------------


def _fill(kind: Kind, where: str, entry: Any, profiles: Profiles) -> Any:
    if kind == "printer" and isinstance(entry, Mapping) and entry.get("drawer"):
        entry = _fill_drawer(where, entry, profiles)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("profile"), str):
        return entry
    name: str = entry["profile"]
    profile = profiles.get(name)
    if profile is None:
        if kind == "printer":
            return entry  # a python-escpos profile name, as before firmware profiles
        known = sorted(p.model for p in profiles if p.kind == kind)
        raise ProfileError(None, f"{where}.profile", f"no {kind} profile {name!r} (known: {known})")
    if profile.kind != kind:
        raise ProfileError(
            None, f"{where}.profile", f"{name!r} is a {profile.kind} profile, not a {kind}'s"
        )
    result = dict(entry)
    if kind == "printer":
        result["profile"] = profile.capabilities.escpos_profile
    for key, source in FILLED[kind].items():
        value = source(profile)
        if key not in result and value is not None:
            result[key] = value
    return result


def _fill_drawer(where: str, entry: Mapping[str, Any], profiles: Profiles) -> dict[str, Any]:
    """A printer entry's ``drawer``: the drawer profile's pin and pulse, unless the entry
    sets them itself."""
    name = entry["drawer"]
    drawer = profiles.get(name) if isinstance(name, str) else None
    if drawer is None or drawer.kind != "drawer":
        known = sorted(p.model for p in profiles if p.kind == "drawer")
        what = f"a {drawer.kind} profile" if drawer is not None else "no profile"
        reason = f"{name!r} is {what}, not a cash drawer's (drawer profiles: {known})"
        raise ProfileError(None, f"{where}.drawer", reason)
    pin = drawer.capabilities.drawer_pin
    model = entry.get("profile")
    printer = profiles.get(model) if isinstance(model, str) else None
    if printer is not None and printer.kind == "printer":
        pulsed = printer.capabilities.drawer_pins
        if pin not in pulsed:
            reason = f"{drawer.model} is wired to pin {pin}; {printer.model} pulses pins {pulsed}"
            raise ProfileError(None, f"{where}.drawer", reason)
    result = dict(entry)
    for key, source in FILLED["drawer"].items():
        value = source(drawer)
        if key not in result and value is not None:
            result[key] = value
    return result


def _check(path: Path, profile: Profile) -> None:
    for section in ("identity", "transport", "capabilities"):
        part = getattr(profile, section)
        for index, key in enumerate(part.uncertain):
            value = getattr(part, key, None) if key not in ("source", "uncertain") else None
            if value is None or value == [] or value == {}:
                raise ProfileError(
                    path,
                    f"{section}.uncertain[{index}]",
                    f"{key!r} is not a key set in [{section}]",
                )
    if profile.protocol not in PROTOCOLS_OF_KIND[profile.kind]:
        reason = f"a {profile.kind} speaks {sorted(PROTOCOLS_OF_KIND[profile.kind])}"
        raise ProfileError(path, "protocol", reason)
    for section, key in _REQUIRED[profile.kind]:
        if getattr(getattr(profile, section), key) is None:
            raise ProfileError(path, f"{section}.{key}", f"a {profile.kind} profile needs it")
    if not profile.sources:
        raise ProfileError(path, "sources", "name at least one source for the facts")
    probe = profile.identity.probe
    if probe is not None:
        try:
            re.compile(probe.answer)
        except re.error as exc:
            reason = f"not a regular expression: {exc}"
            raise ProfileError(path, "identity.probe.answer", reason) from None
    caps = profile.capabilities
    for key in caps.code_pages:
        if not key.isdigit() or int(key) > 255:
            raise ProfileError(path, f"capabilities.code_pages.{key}", "must be a number 0-255")
    for key, value in (("columns", caps.columns), ("rows", caps.rows)):
        if value is not None and not 1 <= value <= 255:
            raise ProfileError(path, f"capabilities.{key}", "must be 1-255")
    for key, value in (("pulse_on_ms", caps.pulse_on_ms), ("pulse_off_ms", caps.pulse_off_ms)):
        if value is not None and not (2 <= value <= 510 and value % 2 == 0):
            reason = "ESC p pulses 2..510 ms in steps of 2 (t x 2 ms)"
            raise ProfileError(path, f"capabilities.{key}", reason)


def _split_msgspec_error(message: str) -> tuple[str, str]:
    # msgspec: "Object contains unknown field `colums` - at `$.capabilities`"
    reason, sep, where = message.rpartition(" - at `")
    if not sep:
        reason, where = message, ""
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    if reason.startswith("Object contains unknown field"):
        field = reason.split("`")[1] if "`" in reason else ""
        key = f"{key}.{field}" if key else field
        reason = "unknown key (check the spelling)"
    elif reason.startswith("Object missing required field"):
        field = reason.split("`")[1] if "`" in reason else ""
        key = f"{key}.{field}" if key else field
        reason = "missing (required)"
    return key, reason
