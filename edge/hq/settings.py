"""Settings of the HQ link (``[hq]`` in the hub's TOML file).

This module imports nothing from the hub (not even edge.bus) so that :mod:`edge.settings` can embed
:class:`HqSettings` as ``Settings.hq`` without an import cycle. :func:`check` holds the
cross-field rules; it returns ``(key, reason)`` pairs with keys relative to ``[hq]``, which the
hub's own settings check prefixes with ``hq.``.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

# The topic segment rule of edge.bus.topics, repeated: importing edge.bus from here would
# import edge.settings back (edge.bus.client needs BusSettings) while it is being defined.
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class HqSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The second MQTT connection: hub ⇄ HQ's cloud broker (docs/protocol.md §11)."""

    enabled: bool = False
    host: str = ""
    """The cloud broker's host name (checked against its TLS certificate)."""
    port: int = 8883
    tls: bool = True
    """TLS is required in production; ``false`` only for a loopback test broker."""
    ca_file: str = ""
    """PEM CA bundle the cloud broker's certificate must chain to; empty: the system store."""
    cert_file: str = ""
    """The hub's client certificate (PEM), issued by HQ for this store."""
    key_file: str = ""
    """Its private key (PEM, mode 0600). Never logged."""
    client_id: str = ""
    """Empty: ``edge-hq-<store_id>``. Stable: the cloud broker keeps the session by it."""
    public_key_path: str = ""
    """HQ's pinned Ed25519 signing key (raw 32 bytes, base64 of them, or PEM).
    Empty: ``<state_dir>/pki/hq-signing.pub`` (written by ``edge init``)."""
    groups: list[str] = msgspec.field(default_factory=list)
    """The groups this store belongs to (a document may target ``group:<name>``)."""
    topic_prefix: str = "hq"
    telemetry_interval_s: float = 60.0
    """Telemetry is published this often, and on a change (see ``telemetry_debounce_s``).
    HQ may change it live (``telemetry.interval_s``)."""
    telemetry_debounce_s: float = 2.0
    """A change is published once it has held this long (flapping is coalesced)."""
    telemetry_poll_s: float = 1.0
    """How often the hub's state is sampled to notice a change."""
    apply_ready_timeout_s: float = 30.0
    """After applying a config, the hub must be ready within this bound or it rolls back."""
    ready_poll_s: float = 0.2
    command_max_age_s: float = 3600.0
    """A command issued longer ago than this is refused (EXPIRED): it sat in a queue."""
    max_document_bytes: int = 256 * 1024
    keepalive_s: int = 30
    session_expiry_s: int = 24 * 3600
    """The cloud broker keeps the hub's session (and queues QoS 1 documents) this long."""
    timeout_s: float = 10.0
    """Bound on connecting and on each publish."""
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0

    def effective_client_id(self, store_id: str) -> str:
        return self.client_id or f"edge-hq-{store_id}"

    def public_key_file(self, state_dir: Path) -> Path:
        if self.public_key_path:
            return Path(self.public_key_path)
        return state_dir / "pki" / "hq-signing.pub"


def check(hq: HqSettings) -> list[tuple[str, str]]:
    """Every problem with ``hq`` as ``(key, reason)``; empty when it can be used."""
    problems: list[tuple[str, str]] = []
    if hq.enabled and not hq.host:
        problems.append(("host", "is required when hq.enabled = true"))
    if not 0 < hq.port < 65536:
        problems.append(("port", f"{hq.port} is not a TCP port (1-65535)"))
    if bool(hq.cert_file) != bool(hq.key_file):
        problems.append(("key_file", "cert_file and key_file go together"))
    if hq.enabled and hq.tls and not hq.cert_file:
        problems.append(("cert_file", "the cloud broker needs the hub's client certificate"))
    for index, group in enumerate(hq.groups):
        if not _SEGMENT.match(group):
            problems.append((f"groups[{index}]", "must be 1-64 of [A-Za-z0-9_.-]"))
    if not _SEGMENT.match(hq.topic_prefix):
        problems.append(("topic_prefix", "must be 1-64 of [A-Za-z0-9_.-]"))
    for key, value in (
        ("telemetry_interval_s", hq.telemetry_interval_s),
        ("telemetry_debounce_s", hq.telemetry_debounce_s),
        ("telemetry_poll_s", hq.telemetry_poll_s),
        ("apply_ready_timeout_s", hq.apply_ready_timeout_s),
        ("ready_poll_s", hq.ready_poll_s),
        ("command_max_age_s", hq.command_max_age_s),
        ("timeout_s", hq.timeout_s),
        ("reconnect_min_s", hq.reconnect_min_s),
    ):
        if not value > 0:
            problems.append((key, "must be greater than 0"))
    if hq.reconnect_max_s < hq.reconnect_min_s:
        problems.append(("reconnect_max_s", "must be >= hq.reconnect_min_s"))
    if not 1024 <= hq.max_document_bytes <= 16 * 1024 * 1024:
        problems.append(("max_document_bytes", "must be between 1024 and 16 MiB"))
    if not 5 <= hq.keepalive_s <= 3600:
        problems.append(("keepalive_s", "must be between 5 and 3600 seconds"))
    return problems
