"""Typed hub configuration: one TOML file plus environment overrides.

Theory of operation
-------------------
1. Find the file: ``--config PATH``, else ``$EDGE_CONFIG``, else ``/etc/edge/edge.toml`` if it
   exists, else built-in defaults that work on a laptop (state under ``./.edge-state``).
2. Parse it with :mod:`tomllib`.
3. Overlay environment overrides: ``EDGE__SECTION__KEY=value`` sets ``[section] key``. The value
   is read as a TOML value when it parses as one (``8080``, ``true``, ``"x"``, ``[1, 2]``) and as
   a plain string otherwise, so ``EDGE__STORE_ID=store-042`` works without quotes.
4. Convert to :class:`Settings` with msgspec (unknown keys are refused: a typo must not be
   silently ignored), then run the cross-field checks.

Every failure raises :class:`SettingsError` naming the file, the key and the reason, e.g.
``/etc/edge/edge.toml: broker.port: Expected `int`, got `str```.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from devices.display_dmd import DM_D110_CODE_TABLES, encode_line
from edge.hq.settings import HqSettings
from edge.hq.settings import check as check_hq
from edge.relay.profiles import ProfileError, fill_from_profiles
from edge.relay.usblp import UsbSelector
from edge.uplink.netsuite.mapping import CatalogueMapping as NetSuiteCatalogue
from edge.uplink.netsuite.mapping import Mapping as NetSuiteMapping

DEFAULT_SYSTEM_CONFIG = Path("/etc/edge/edge.toml")
ENV_CONFIG = "EDGE_CONFIG"
ENV_PREFIX = "EDGE__"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class SettingsError(Exception):
    """The configuration cannot be used. Not retryable: fix the file or the environment."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class BrokerSettings(_Section):
    """The local Mosquitto broker."""

    mode: Literal["managed", "external"] = "managed"
    host: str = "127.0.0.1"
    """Where the hub's own client connects (the loopback listener in managed mode)."""
    port: int = 11883
    lan_bind: str = "127.0.0.1"
    """Address of the listener for registers and peripherals (managed mode). On the appliance,
    the store LAN address; the laptop default keeps it on loopback."""
    lan_port: int = 11884
    mosquitto_path: str = "mosquitto"
    max_queued_messages: int = 100_000
    """Per-client queue for offline persistent sessions. Large on purpose: Mosquitto drops
    beyond it (and logs it); registers re-send unacknowledged work, so a drop is never silent
    data loss, but it must not happen in a normal outage."""
    max_packet_bytes: int = 4 * 1024 * 1024
    persistent_client_expiration: str = "30d"
    start_timeout_s: float = 10.0
    restart_backoff_min_s: float = 0.2
    restart_backoff_max_s: float = 30.0


class BusSettings(_Section):
    """The hub's MQTT client."""

    client_id: str = ""
    """Empty: ``edge-hub-<store_id>``. Must be stable: the broker keeps the session by it."""
    keepalive_s: int = 15
    session_expiry_s: int = 7 * 24 * 3600
    """How long the broker keeps the hub's session (and queues its requests) while it is down."""
    max_request_bytes: int = 256 * 1024
    max_concurrent_requests: int = 256
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 10.0
    request_timeout_s: float = 10.0


class OutboxSettings(_Section):
    """The durable store-wide outbox and its sender."""

    enabled: bool = True
    path: str = ""
    """Empty: ``<state_dir>/outbox.db``."""
    connector: Literal["none", "hq_http", "netsuite"] = "none"
    """Where transactions go. "none": kept (and acknowledged) but not sent anywhere yet."""
    min_free_bytes: int = 256 * 1024 * 1024
    """Below this much free space the hub refuses new transactions (STORAGE_FULL)."""
    reserve_bytes: int = 16 * 1024 * 1024
    """Held in ``<state_dir>/space-reserve`` while the disk has room above the floor, and given
    back when the hub starts below it, so that it can open its files on a full disk. 0: none."""
    retention_days: float = 14.0
    """Delivered items are kept this long (for reconciliation), then pruned."""
    max_group: int = 512
    batch_max: int = 100
    concurrency: int = 4
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 2.0
    breaker_cooldown_cap_s: float = 30.0
    idle_poll_s: float = 1.0


class HqHttpSettings(_Section):
    """The generic HQ HTTPS JSON API (CloudEvents batch)."""

    url: str = ""
    token: str = ""
    """Bearer token. A secret: set it from the environment (EDGE__UPLINK__HQ_HTTP__TOKEN) or a
    credential file; it is never logged or shown."""
    timeout_s: float = 10.0
    max_batch: int = 100
    max_concurrency: int = 4


class NetSuiteSettings(_Section):
    """NetSuite SuiteTalk REST (docs/operations.md, "NetSuite")."""

    account_id: str = ""
    """As NetSuite shows it: ``1234567``, or ``1234567_SB1`` for a sandbox."""
    base_url: str = ""
    """Empty: ``https://<account>.suitetalk.api.netsuite.com`` (Company URLs in NetSuite)."""
    auth: Literal["oauth2", "tba"] = "oauth2"
    client_id: str = ""
    certificate_id: str = ""
    private_key_path: str = ""
    """PEM private key of the certificate mapped in NetSuite (mode 0600, never logged)."""
    algorithm: Literal["PS256", "ES256"] = "PS256"
    consumer_key: str = ""
    consumer_secret: str = ""
    token_id: str = ""
    token_secret: str = ""
    concurrency: int = 5
    """Requests in flight at once: the account's limit (5 on a standard tier) or its share."""
    timeout_s: float = 30.0
    throttle_on_401: bool = True
    """Treat 401 INVALID_LOGIN as "too busy" (NetSuite answers so over its limit)."""
    batch: bool = False
    """Post one-record sales and refunds in asynchronous batches (ref §2.3); off: one request
    per record. A batch NetSuite refuses falls back to one request per record."""
    batch_size: int = 100
    """Records per batch request, 2 to 100."""
    batch_poll_s: float = 0.5
    """First wait between polls of a batch job (it grows to 5 s)."""
    batch_wait_s: float = 120.0
    """How long a batch job is polled before its items are retried later (the same batch
    finds the same job again)."""
    mapping: NetSuiteMapping = msgspec.field(default_factory=NetSuiteMapping)
    catalogue: NetSuiteCatalogue = msgspec.field(default_factory=NetSuiteCatalogue)


class UplinkSettings(_Section):
    hq_http: HqHttpSettings = msgspec.field(default_factory=HqHttpSettings)
    netsuite: NetSuiteSettings = msgspec.field(default_factory=NetSuiteSettings)


class CatalogueSettings(_Section):
    """The store's catalogue: where it comes from, how often, and the registers' feed
    (docs/operations.md, "The catalogue")."""

    source: Literal["none", "hq", "netsuite"] = "none"
    """Where the catalogue comes from. "none": no downsync (the hub serves what its file
    holds); "hq": the generic HQ catalogue API at ``url``; "netsuite": SuiteQL with
    ``[uplink.netsuite]`` credentials and ``[uplink.netsuite.catalogue]`` mapping."""
    url: str = ""
    """Base URL of the HQ catalogue API (source = "hq")."""
    token: str = ""
    """Bearer token of the HQ catalogue API. A secret: set it from the environment
    (EDGE__CATALOGUE__TOKEN); it is never logged or shown."""
    interval_s: float = 300.0
    """Downsync every this many seconds (and at once on HQ's "catalogue changed")."""
    retry_min_s: float = 5.0
    """After a failed downsync, retry after this long, doubling up to ``interval_s``."""
    page_size: int = 1000
    timeout_s: float = 30.0
    tombstone_retention_days: float = 30.0
    """Deletions are kept this long for registers that were off; a register further behind
    gets a full snapshot instead (automatically, nothing is lost)."""
    register_stale_after_days: float = 2.0
    """A register that has not fetched the feed for this long is reported stale."""
    snapshot_ratio: float = 1.0
    """A register gets a snapshot when its delta would be larger than this many snapshots."""


class UsbPrinterId(_Section):
    """Which USB printer (edge.relay.usblp): what is given must match; the serial number
    tells two printers of one model apart."""

    serial: str = ""
    """The USB serial number (iSerial), as ``/sys/class/usbmisc/lpN/device/../serial`` shows."""
    id: str = ""
    """``vendor:product`` in hex (``04b8:0202``), as ``lsusb`` shows."""


class PrinterSettings(_Section):
    """A receipt printer (ESC/POS): on the network (``host``, raw TCP) or on USB (``usb``)."""

    name: str
    """How lanes and technicians name it (``front``, ``lane-3``); unique."""
    host: str = ""
    """A network printer's address. Either ``host`` or ``usb``."""
    port: int = 9100
    usb: UsbPrinterId | None = None
    """A USB printer, found by this identity wherever it is plugged in (``/dev/usb/lpN``)."""
    columns: int = 42
    """Characters per line in font A: 42 on 80 mm paper (TM-T88), 48 on some, 32 on 58 mm."""
    profile: str = "default"
    """python-escpos capability profile (escpos-printer-db), e.g. ``TM-T88V``."""
    drawer: str = ""
    """The cash drawer wired to this printer: a drawer profile's model (firmware_profiles/,
    kind ``drawer``, e.g. ``"Cash drawer, printer pin 5"``). It fills ``drawer_pin``,
    ``drawer_on_ms`` and ``drawer_off_ms``; a name that is not a drawer profile, or a drawer
    on a pin the printer's own profile does not pulse, stops the hub at start.

    Which pin and pulse a kick uses: ``device.drawer`` without ``pin`` and the console's
    drawer test kick this drawer (its pin, its pulse): the wiring is the store's, set here
    once, not in every register's application. A lane that sends
    ``pin`` still gets that pin (a second drawer on the other pin): with this drawer's pulse
    if it is this drawer's pin, else the default 100 ms on / 100 ms off."""
    drawer_pin: Literal[2, 5] = 2
    """The drawer-kick connector pin (2 or 5) of the drawer; filled from ``drawer``."""
    drawer_on_ms: int = 100
    """``ESC p`` pulse ON, 2..510 ms in steps of 2; filled from ``drawer``."""
    drawer_off_ms: int = 100
    """``ESC p`` pulse OFF, 2..510 ms in steps of 2; filled from ``drawer``."""


class ScaleSettings(_Section):
    """A serial scale (edge.relay.scales)."""

    name: str
    port: str
    """A serial device (``/dev/ttyUSB0``) or ``socket://host:port`` (a serial server)."""
    profile: str = ""
    """A firmware profile (firmware_profiles/, by model): fills what this entry leaves out."""
    protocol: Literal["toledo", "magellan", "cas", "scp01"] = "toledo"
    """``toledo`` Mettler-Toledo 8217 (``W``, ``Z``, ``T``); ``magellan`` Datalogic Magellan
    single cable (``S14``; no zero or tare); ``cas`` CAS ECR ``DC1`` poll, e.g. a PD-II in
    ECR emulation (no zero or tare); ``scp01`` NCI / Avery Weigh-Tronix SCP-01 "NCI
    standard" (``W``, ``Z``; no tare). edge.relay.scales, peripherals.md §2."""
    unit: Literal["kg", "lb"] = "kg"
    """The unit the scale weighs in (Toledo and Magellan frames do not say it; CAS and SCP-01
    frames carry their own, which is what the hub answers)."""
    baudrate: int = 9600
    bytesize: Literal[7, 8] = 7
    parity: Literal["N", "E", "O"] = "E"
    """Toledo and Magellan SASI are 9600 7E1; CAS ECR is typically 9600 8N1; SCP-01 is set on
    the scale (often 7E1) (peripherals.md §2.1): check the scale's setup. A scale's profile
    fills all four."""
    stopbits: Literal[1, 2] = 1
    settle_s: float = 3.0
    """How long a weigh waits for the weight to settle before WEIGHT_UNSTABLE."""
    poll_s: float = 0.2
    claim_ttl_s: float = 30.0
    """An idle claim lapses after this long (a lane that forgot to release)."""


class DisplaySettings(_Section):
    """A customer display on a serial line (edge.relay.displays)."""

    name: str
    port: str
    """A serial device (``/dev/ttyUSB0``) or ``socket://host:port`` (a serial server)."""
    profile: str = ""
    """A firmware profile (firmware_profiles/, by model): fills what this entry leaves out."""
    protocol: Literal["epson-dmd"] = "epson-dmd"
    columns: int = 20
    rows: int = 2
    baudrate: int = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    code_table: int | None = None
    """``ESC t n`` sent after each initialization; None keeps the display's power-on table."""
    encoding: str = "cp437"
    """The Python codec of that code table (text is written one byte per character)."""


class DevicesSettings(_Section):
    """The shared peripherals the hub drives for the lanes."""

    status_every_s: float = 5.0
    """How often each device's status is checked."""
    misses_to_offline: int = 3
    """A device is declared gone only after this many missed checks in a row."""
    timeout_s: float = 5.0
    """Bound on one command (a print, a drawer kick, a status check)."""
    keep_open_s: float = 2.0
    """A network printer's connection stays open this long after a command or check, for the
    next one (a sale's receipt then its drawer kick, a rush of receipts), then closes: store
    printers take one client at a time. 0: a connection per command."""
    printers: list[PrinterSettings] = []
    scales: list[ScaleSettings] = []
    displays: list[DisplaySettings] = msgspec.field(default_factory=list)
    profiles_dir: str = ""
    """Where the device profiles are (empty: the firmware_profiles/ shipped with the hub)."""
    usb_sysfs_dir: str = "/sys/class/usbmisc"
    """Where the kernel lists USB printers (``lpN``, each with its USB identity)."""
    usb_dev_dir: str = "/dev/usb"
    """Where their device nodes are (``lpN``)."""


class LanesSettings(_Section):
    """The register registry and its lifecycle timers."""

    auto_enroll: bool = True
    """A register that speaks on the broker is enrolled on first contact (with a hub identity,
    only a device enrolled with a certificate can); one seen only on mDNS waits for a
    technician."""
    heartbeat_timeout_s: float = 90.0
    """No status/heartbeat for this long: an online lane is offline (covers a lost will)."""
    offline_warn_after_s: float = 4 * 3600.0
    stale_after_days: float = 3.0
    retire_after_days: float = 90.0
    retire_warn_before_days: float = 14.0
    tick_s: float = 10.0


class DiscoverySettings(_Section):
    """mDNS: advertise the hub, browse registers and network printers."""

    enabled: bool = False
    interfaces: list[str] = []
    """IPv4 addresses of the store-LAN interfaces to use; never every interface blindly."""
    advertise_address: str = ""
    """Address put in the hub's advert; empty: the first of ``interfaces``."""


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8780


class SecuritySettings(_Section):
    """Device enrollment and the LAN's mutual TLS (active once ``edge init`` has created the
    hub's identity in the state directory)."""

    https_host: str = ""
    """Address of the HTTPS listener for the store LAN (enrollment, register feed, console);
    empty: the broker's ``lan_bind``."""
    https_port: int = 8743
    cert_days: int = 90
    """Lifetime of a device certificate; devices renew before it ends (docs/protocol.md)."""
    code_ttl_s: float = 900.0
    """How long an enrollment code stays usable (15 minutes)."""
    attempts_per_client: int = 5
    attempts_overall: int = 20
    attempts_window_s: float = 300.0
    """Wrong codes allowed per client address / for the whole hub within the window."""
    maintain_every_s: float = 3600.0
    """How often the CRL and the hub's server certificate are checked and renewed when due."""
    server_renew_before_days: float = 30.0


class ShutdownSettings(_Section):
    grace_s: float = 10.0
    """Bound on a graceful stop: in-flight requests get this long to finish."""


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(_Section):
    store_id: str = "store-001"
    hub_id: str = "hub-1"
    state_dir: Path = Path(".edge-state")
    broker: BrokerSettings = msgspec.field(default_factory=BrokerSettings)
    bus: BusSettings = msgspec.field(default_factory=BusSettings)
    outbox: OutboxSettings = msgspec.field(default_factory=OutboxSettings)
    uplink: UplinkSettings = msgspec.field(default_factory=UplinkSettings)
    catalogue: CatalogueSettings = msgspec.field(default_factory=CatalogueSettings)
    devices: DevicesSettings = msgspec.field(default_factory=DevicesSettings)
    lanes: LanesSettings = msgspec.field(default_factory=LanesSettings)
    discovery: DiscoverySettings = msgspec.field(default_factory=DiscoverySettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    shutdown: ShutdownSettings = msgspec.field(default_factory=ShutdownSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    hq: HqSettings = msgspec.field(default_factory=HqSettings)

    @property
    def client_id(self) -> str:
        return self.bus.client_id or f"edge-hub-{self.store_id}"

    @property
    def catalogue_path(self) -> Path:
        """The store's catalogue file (edge.catalogue.store)."""
        return self.state_dir / "catalogue.db"

    @property
    def console_accounts_path(self) -> Path:
        """The web console's technician accounts (``edge console user add``)."""
        return self.state_dir / "console-accounts.json"

    @property
    def outbox_path(self) -> Path:
        return Path(self.outbox.path) if self.outbox.path else self.state_dir / "outbox.db"


SECRET_KEYS = frozenset({"token", "secret", "password", "consumer_secret", "token_secret"})


def _path_as_text(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise NotImplementedError(f"cannot show {type(value).__name__}")


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced, for display and logs."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: ("***" if k in SECRET_KEYS and v else walk(v)) for k, v in node.items()}
        return node

    result: dict[str, Any] = walk(msgspec.to_builtins(settings, enc_hook=_path_as_text))
    return result


def find_config(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """Step 1: the file to read, or None for built-in defaults."""
    if explicit:
        return Path(explicit)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    if DEFAULT_SYSTEM_CONFIG.exists():
        return DEFAULT_SYSTEM_CONFIG
    return None


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load, overlay the environment, validate. Raises :class:`SettingsError`."""
    env = os.environ if env is None else env
    config_path = find_config(path, env)
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    if config_path is not None:
        source = str(config_path)
        raw = _read_toml(config_path)
    _apply_env(raw, env)
    return settings_from_dict(raw, source)


def settings_from_dict(raw: Mapping[str, Any], source: str) -> Settings:
    """Steps 4: convert and check; errors name ``source`` and the dotted key."""
    try:
        raw = fill_from_profiles(raw)  # devices naming a profile get its defaults
    except ProfileError as exc:
        raise SettingsError(str(exc.path or source), exc.key, exc.reason) from None
    try:
        settings = msgspec.convert(raw, Settings, dec_hook=_dec_hook, str_keys=True)
    except msgspec.ValidationError as exc:
        key, reason = _split_msgspec_error(str(exc))
        raise SettingsError(source, key, reason) from None
    _check(settings, source)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(str(path), "", "file not found") from None
    except PermissionError:
        raise SettingsError(str(path), "", "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(str(path), "", f"not valid TOML: {exc}") from None


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(name, ".".join(parts), "is not a section")
            node = child
        node[parts[-1]] = _parse_env_value(value)


def _parse_env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError


def _split_msgspec_error(message: str) -> tuple[str, str]:
    # msgspec: "Expected `int`, got `str` - at `$.broker.port`"
    reason, sep, where = message.rpartition(" - at `")
    if not sep:
        return "", message
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    if reason.startswith("Object contains unknown field"):
        field = reason.split("`")[1] if "`" in reason else ""
        key = f"{key}.{field}" if key else field
        reason = "unknown key (check the spelling)"
    return key, reason


def _check(s: Settings, source: str) -> None:
    def bad(key: str, reason: str) -> SettingsError:
        return SettingsError(source, key, reason)

    for key, value in (("store_id", s.store_id), ("hub_id", s.hub_id)):
        if not _ID_RE.match(value):
            raise bad(key, "must be 1-63 letters, digits, '-' or '_' (it is used in MQTT topics)")
    for key, port in (("broker.port", s.broker.port), ("broker.lan_port", s.broker.lan_port)):
        if not 0 < port < 65536:
            raise bad(key, f"{port} is not a TCP port (1-65535)")
    if not 0 <= s.security.https_port < 65536:
        raise bad("security.https_port", f"{s.security.https_port} is not a TCP port")
    if not 0 <= s.http.port < 65536:
        raise bad("http.port", f"{s.http.port} is not a TCP port (0: any free port)")
    if s.broker.mode == "managed" and s.broker.port == s.broker.lan_port:
        raise bad("broker.lan_port", "must differ from broker.port")
    positive = {
        "broker.start_timeout_s": s.broker.start_timeout_s,
        "broker.restart_backoff_min_s": s.broker.restart_backoff_min_s,
        "bus.reconnect_min_s": s.bus.reconnect_min_s,
        "bus.request_timeout_s": s.bus.request_timeout_s,
        "shutdown.grace_s": s.shutdown.grace_s,
        "lanes.heartbeat_timeout_s": s.lanes.heartbeat_timeout_s,
        "lanes.tick_s": s.lanes.tick_s,
        "security.code_ttl_s": s.security.code_ttl_s,
        "security.attempts_window_s": s.security.attempts_window_s,
        "security.maintain_every_s": s.security.maintain_every_s,
        "security.cert_days": s.security.cert_days,
    }
    for key, limit in positive.items():
        if limit <= 0:
            raise bad(key, "must be greater than 0")
    if s.broker.restart_backoff_max_s < s.broker.restart_backoff_min_s:
        raise bad("broker.restart_backoff_max_s", "must be >= broker.restart_backoff_min_s")
    if s.bus.reconnect_max_s < s.bus.reconnect_min_s:
        raise bad("bus.reconnect_max_s", "must be >= bus.reconnect_min_s")
    if not 1024 <= s.bus.max_request_bytes <= s.broker.max_packet_bytes:
        raise bad("bus.max_request_bytes", "must be between 1024 and broker.max_packet_bytes")
    if s.bus.max_concurrent_requests < 1:
        raise bad("bus.max_concurrent_requests", "must be at least 1")
    o = s.outbox
    for key, count in (
        ("outbox.batch_max", o.batch_max),
        ("outbox.concurrency", o.concurrency),
        ("outbox.max_group", o.max_group),
        ("outbox.breaker_threshold", o.breaker_threshold),
    ):
        if count < 1:
            raise bad(key, "must be at least 1")
    if o.min_free_bytes < 0:
        raise bad("outbox.min_free_bytes", "must not be negative")
    if o.reserve_bytes < 0:
        raise bad("outbox.reserve_bytes", "must not be negative")
    if o.connector == "hq_http" and not s.uplink.hq_http.url:
        raise bad("uplink.hq_http.url", 'is required when outbox.connector = "hq_http"')
    c = s.catalogue
    if c.source == "hq" and not c.url:
        raise bad("catalogue.url", 'is required when catalogue.source = "hq"')
    if c.source == "netsuite" and not s.uplink.netsuite.catalogue.enabled:
        raise bad(
            "uplink.netsuite.catalogue.enabled",
            'must be true when catalogue.source = "netsuite"',
        )
    for key, seconds in (
        ("catalogue.interval_s", c.interval_s),
        ("catalogue.retry_min_s", c.retry_min_s),
        ("catalogue.timeout_s", c.timeout_s),
        ("catalogue.snapshot_ratio", c.snapshot_ratio),
    ):
        if seconds <= 0:
            raise bad(key, "must be greater than 0")
    if not 1 <= c.page_size <= 10_000:
        raise bad("catalogue.page_size", "must be between 1 and 10000")
    if not 0 < c.register_stale_after_days < c.tombstone_retention_days:
        raise bad(
            "catalogue.register_stale_after_days",
            "must be more than 0 and less than catalogue.tombstone_retention_days (a register "
            "is reported stale long before its deletions are pruned)",
        )
    if "netsuite" in (o.connector, c.source):
        ns = s.uplink.netsuite
        needed = ["account_id"] + (
            ["client_id", "certificate_id", "private_key_path"]
            if ns.auth == "oauth2"
            else ["consumer_key", "consumer_secret", "token_id", "token_secret"]
        )
        for key in needed:
            if not getattr(ns, key):
                raise bad(f"uplink.netsuite.{key}", f'is required with auth = "{ns.auth}"')
        if ns.concurrency < 1:
            raise bad("uplink.netsuite.concurrency", "must be at least 1")
        if not 2 <= ns.batch_size <= 100:
            raise bad("uplink.netsuite.batch_size", "must be 2 to 100 (NetSuite's limit)")
        if not (ns.batch_poll_s > 0 and ns.batch_wait_s > 0):
            raise bad("uplink.netsuite.batch_poll_s", "batch_poll_s and batch_wait_s must be > 0")
    d = s.devices
    if d.status_every_s <= 0 or d.timeout_s <= 0 or d.misses_to_offline < 1:
        raise bad("devices", "status_every_s and timeout_s must be > 0, misses_to_offline >= 1")
    if d.keep_open_s < 0:
        raise bad("devices.keep_open_s", "must be >= 0")
    names = [p.name for p in d.printers] + [s.name for s in d.scales]
    names += [display.name for display in d.displays]
    for index, display in enumerate(d.displays):
        key = f"devices.displays[{index}]"
        if not _ID_RE.match(display.name) or names.count(display.name) > 1:
            raise bad(f"{key}.name", "must be a unique id (letters, digits)")
        if not (1 <= display.columns <= 80 and 1 <= display.rows <= 8):
            raise bad(f"{key}.columns", "columns must be 1-80 and rows 1-8")
        if display.code_table is not None and display.code_table not in DM_D110_CODE_TABLES:
            raise bad(f"{key}.code_table", f"must be one of {sorted(DM_D110_CODE_TABLES)}")
        try:
            encode_line("", width=1, encoding=display.encoding)
        except (LookupError, ValueError):
            reason = "must be a one-byte Python codec (cp437, cp858, ...)"
            raise bad(f"{key}.encoding", reason) from None
    for index, scale in enumerate(d.scales):
        if not _ID_RE.match(scale.name) or names.count(scale.name) > 1:
            raise bad(f"devices.scales[{index}].name", "must be a unique id (letters, digits)")
    for index, printer in enumerate(d.printers):
        if not _ID_RE.match(printer.name) or names.count(printer.name) > 1:
            raise bad(f"devices.printers[{index}].name", "must be a unique id (letters, digits)")
        if not 0 < printer.port < 65536:
            raise bad(f"devices.printers[{index}].port", "is not a TCP port")
        if bool(printer.host) == (printer.usb is not None):
            reason = "set either host (a network printer) or usb (a USB printer)"
            raise bad(f"devices.printers[{index}].host", reason)
        if printer.usb is not None:
            try:
                UsbSelector.parse(serial=printer.usb.serial, usb_id=printer.usb.id)
            except ValueError as exc:
                raise bad(f"devices.printers[{index}].usb", str(exc)) from None
        if not 24 <= printer.columns <= 64:
            raise bad(f"devices.printers[{index}].columns", "must be between 24 and 64")
        for key in ("drawer_on_ms", "drawer_off_ms"):
            ms = getattr(printer, key)
            if not (2 <= ms <= 510 and ms % 2 == 0):
                reason = "ESC p pulses 2..510 ms in steps of 2 (t x 2 ms)"
                raise bad(f"devices.printers[{index}].{key}", reason)
    if s.discovery.enabled and not s.discovery.interfaces:
        raise bad("discovery.interfaces", "list the store-LAN addresses to announce on")
    if not s.lanes.stale_after_days < s.lanes.retire_after_days:
        raise bad("lanes.retire_after_days", "must be more than lanes.stale_after_days")
    if not 5 <= s.bus.keepalive_s <= 3600:
        raise bad("bus.keepalive_s", "must be between 5 and 3600 seconds")
    for key, reason in check_hq(s.hq):
        raise bad(f"hq.{key}", reason)
