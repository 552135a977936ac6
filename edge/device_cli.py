"""`edge init`, `edge device add|list|revoke` and `edge device profiles`: the hub's identity,
its devices and the device models it knows.

``edge init`` works on the state directory directly (the hub reads the identity when it starts:
restart it afterwards). ``edge device add|list|revoke`` talk to the running hub over its
loopback API, so a code, an enrollment and a revocation go through one place that also reloads
the broker; ``list`` also shows the shared peripherals (configured, or network printers found on
mDNS) with the device profile each looks like (edge.relay.identify, via the console's
``/api/v1/peripherals``). ``edge device profiles`` reads the device profiles
(``devices.profiles_dir``, or the firmware_profiles/ shipped with the hub) directly: it works
without a running hub.

Exit codes as in edge.cli: 0 ok, 1 problem (unknown device), 2 usage, 3 hub unreachable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
from rich.table import Table

from edge.api_client import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    Unreachable,
    call,
    output_console,
    print_table,
    when,
)
from edge.relay.profiles import DEFAULT_DIR, Profile, ProfileError, drawer_kick, load_profiles
from edge.security.identity import IdentityError, initialize
from edge.security.pki import ROLES
from edge.security.qr import enroll_uri, qr_ascii
from edge.settings import Settings


def add_parsers(sub: Any) -> None:
    init = sub.add_parser("init", help="create the hub's identity: CA, server certificate, keys")
    init.add_argument("--store", required=True, help="store id (must match the settings)")
    init.add_argument("--hub", default=None, help="hub id (default: the settings' hub_id)")
    init.add_argument("--name", action="append", default=[], help="DNS name of the hub (repeat)")
    init.add_argument("--ip", action="append", default=[], help="LAN address of the hub (repeat)")
    init.add_argument("--hq-key", type=Path, default=None, help="HQ's Ed25519 public key to pin")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.add_argument("--json", action="store_true")

    device = sub.add_parser("device", help="enroll and revoke registers and peripherals")
    device.add_argument("--url", default=None, help="hub API (default: from the settings)")
    device_sub = device.add_subparsers(dest="device_command", required=True)
    add = device_sub.add_parser("add", help="create a one-time enrollment code for a device")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--lane", default="", help="lane id of a register (default: its name)")
    add.add_argument("--json", action="store_true")
    listing = device_sub.add_parser(
        "list", help="devices and their certificates; shared peripherals and their likely model"
    )
    listing.add_argument("--json", action="store_true")
    revoke = device_sub.add_parser("revoke", help="revoke a device at once")
    revoke.add_argument("name")
    revoke.add_argument("--json", action="store_true")
    profiles = device_sub.add_parser(
        "profiles", help="the device models the hub knows (firmware profiles; no hub needed)"
    )
    profiles.add_argument("--kind", choices=PROFILE_KINDS, default=None)
    profiles.add_argument("--json", action="store_true")


PROFILE_KINDS = ("printer", "scale", "display", "drawer")


def run_profiles(settings: Settings, args: argparse.Namespace) -> int:
    """``edge device profiles [--kind K] [--json]``: every profile of ``devices.profiles_dir``
    (default: the shipped firmware_profiles/). A malformed file is a configuration error
    (exit 2) naming the file and the key."""
    directory = (
        Path(settings.devices.profiles_dir) if settings.devices.profiles_dir else DEFAULT_DIR
    )
    try:
        profiles = load_profiles(directory)
    except ProfileError as exc:
        print(f"edge: device profiles: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rows = [
        _profile_row(profile, profiles.path_of(profile))
        for profile in profiles
        if args.kind is None or profile.kind == args.kind
    ]
    if args.json:
        print(json.dumps({"profiles_dir": str(directory), "profiles": rows}))
        return EXIT_OK
    table = Table("model", "vendor", "kind", "protocol", "key capabilities", "file")
    for row in rows:
        model = row["model"]
        if row["also_known_as"]:
            model += f" ({', '.join(row['also_known_as'])})"
        table.add_row(
            model, row["vendor"], row["kind"], row["protocol"], row["key"], Path(row["file"]).name
        )
    console = output_console()
    console.print(f"{len(rows)} device profiles in {directory}")
    console.print(table)
    return EXIT_OK


def _profile_row(profile: Profile, path: Path) -> dict[str, Any]:
    caps = profile.capabilities
    facts = {
        key: value
        for key, value in msgspec.structs.asdict(caps).items()
        if key not in ("source", "uncertain") and value not in (None, [], {})
    }
    row: dict[str, Any] = {
        "model": profile.model,
        "vendor": profile.vendor,
        "kind": profile.kind,
        "protocol": profile.protocol,
        "also_known_as": list(profile.also_known_as),
        "summary": profile.summary,
        "capabilities": facts,
        "uncertain": list(caps.uncertain),
        "key": _key_capabilities(profile),
        "file": str(path),
    }
    if profile.kind == "drawer":
        row["drawer_kick"] = drawer_kick(profile).hex(" ")
    return row


def _key_capabilities(profile: Profile) -> str:
    """A line of what matters most for each kind (the whole set is in --json)."""
    caps, transport = profile.capabilities, profile.transport
    parts: list[str]
    if profile.kind == "printer":
        parts = [
            f"{caps.paper_width_mm} mm" if caps.paper_width_mm else "",
            f"{caps.columns} col",
            "drawer pins " + "/".join(map(str, caps.drawer_pins)) if caps.drawer_pins else "",
            f"layout {caps.escpos_profile}",
        ]
    elif profile.kind == "scale":
        parts = [
            f"{caps.capacity} {caps.unit} by {caps.division}" if caps.capacity else f"{caps.unit}",
            "zero" if caps.zero else "",
            "tare" if caps.tare else "",
            "scanner" if caps.barcode_scanner else "",
        ]
    elif profile.kind == "display":
        parts = [f"{caps.rows} x {caps.columns}"]
    else:
        parts = [
            f"pin {caps.drawer_pin}",
            f"{caps.pulse_on_ms}/{caps.pulse_off_ms} ms",
            f"on {caps.printer}",
            f"kick {drawer_kick(profile).hex(' ')}",
        ]
    if transport.baudrate:
        line = f"{transport.bytesize or ''}{transport.parity or ''}{transport.stopbits or ''}"
        parts.append(f"{transport.baudrate} {line}".strip())
    elif transport.tcp_port:
        parts.append(f"tcp {transport.tcp_port}")
    return ", ".join(part for part in parts if part)


def run_init(settings: Settings, args: argparse.Namespace) -> int:
    if args.store != settings.store_id:
        print(
            f"edge: --store {args.store} differs from the settings' store_id "
            f"{settings.store_id}: set store_id first (it names the MQTT topics)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    hq_key = args.hq_key.read_bytes() if args.hq_key else None
    try:
        identity = initialize(
            settings.state_dir,
            store_id=settings.store_id,
            hub_id=args.hub or settings.hub_id,
            names=args.name,
            addresses=args.ip,
            hq_public_key=hq_key,
            now=dt.datetime.now(dt.UTC),
            force=args.force,
        )
    except IdentityError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except ValueError as exc:  # a malformed --ip
        print(f"edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = {
        "state_dir": str(settings.state_dir),
        "ca_fingerprint": identity.ca_fingerprint,
        "hq_key_pinned": hq_key is not None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"hub identity created in {identity.root}")
        print(f"CA fingerprint: {identity.ca_fingerprint}")
        print("restart the hub: the LAN now needs enrolled devices (edge device add NAME)")
    return EXIT_OK


def run_device_command(base_url: str, https_url: str, args: argparse.Namespace) -> int:
    command = args.device_command
    try:
        if command == "add":
            status, body = call(
                f"{base_url}/api/v1/devices",
                10,
                {"name": args.name, "role": args.role, "lane": args.lane},
            )
            if status != 201:
                return _failed(status, body)
            _, ca = call(f"{base_url}/api/v1/enroll/ca", 10)
            body["ca_fingerprint"] = ca["fingerprint"]
            body["uri"] = enroll_uri(body["code"], ca["fingerprint"], https_url)
            if args.json:
                print(json.dumps(body))
                return EXIT_OK
            expires = when(body["expires_at"])
            print(qr_ascii(body["uri"]))
            print(f"enrollment code for {body['device']} ({body['role']}): {body['code']}")
            print(f"single use, valid until {expires}; hub {https_url}, CA {ca['fingerprint']}")
            return EXIT_OK
        if command == "list":
            return _list(base_url, args)
        status, body = call(f"{base_url}/api/v1/devices/{args.name}/revoke", 10, {})
        if status != 200:
            return _failed(status, body)
        if args.json:
            print(json.dumps(body))
        else:
            print(f"{args.name} revoked: its connection is closed and its certificate refused")
        return EXIT_OK
    except Unreachable as exc:
        print(f"edge: hub not reachable at {base_url}: {exc}", file=sys.stderr)
        return 3


def _list(base_url: str, args: argparse.Namespace) -> int:
    """``edge device list``: the enrolled devices and their certificates (none before
    ``edge init``), then the shared peripherals, configured or discovered, with the device
    profile each looks like (``peripherals``: the console's Devices page rows)."""
    status, body = call(f"{base_url}/api/v1/devices", 10)
    initialized = status != 404  # the enrollment API exists once the hub has its identity
    if status != 200 and initialized:
        return _failed(status, body)
    enrolled = body["devices"] if initialized else []
    status, shared = call(f"{base_url}/api/v1/peripherals", 10)
    peripherals = shared["devices"] if status == 200 else []
    if args.json:
        print(json.dumps({"devices": enrolled, "peripherals": peripherals}))
        return EXIT_OK
    console = output_console()
    if initialized:
        table = Table("device", "role", "lane", "state", "enrolled", "certificate until")
        for d in enrolled:
            table.add_row(
                d["name"],
                d["role"],
                d["lane"] or "-",
                d["state"],
                when(d["enrolled_at"]),
                when(d["not_after"]),
            )
        print_table(console, table)
    else:
        console.print("no enrolled devices: the hub has no identity yet (`edge init`)")
    if peripherals:
        shared_table = Table("shared device", "kind", "status", "address", "profile", "looks like")
        for d in peripherals:
            shared_table.add_row(
                d["name"],
                d["kind"],
                d["summary"],
                d["address"] or "-",
                d["profile"] or "-",
                _looks_like(d["suggested"]),
            )
        console.print(shared_table)
    return EXIT_OK


def _looks_like(suggested: dict[str, Any] | None) -> str:
    """The suggested profile and why, on one line."""
    if suggested is None:
        return "-"
    model = suggested["model"]
    if suggested["ambiguous"]:
        model += " or " + ", ".join(suggested["others"])
    if not suggested["confirmed"]:
        model += " (unconfirmed)"
    return f"{model}: {'; '.join(suggested['reasons'])}"


def _failed(status: int, body: dict[str, Any]) -> int:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    if error.get("code") == "HTTP_404":
        error = {
            "code": "NOT_INITIALIZED",
            "message": "the hub has no identity: run `edge init --store ID` and restart the hub",
        }
    print(f"edge: {error.get('code', status)}: {error.get('message', '')}", file=sys.stderr)
    return EXIT_USAGE if status == 400 else EXIT_PROBLEM
