"""The hub's identity on disk and the register of enrolled devices.

Layout, all under ``<state_dir>/pki/`` (directory 0700, keys 0600)::

    ca.key  ca.pem          the hub CA (its key never leaves the box; the key may instead be
                            the systemd credential ``edge-ca-key``, encrypted at rest)
    server.key  server.pem  the LAN broker listener's and the HTTPS API's certificate
    crl.pem                 revoked device certificates (checked by the broker at each handshake)
    broker.acl              Mosquitto acl_file (rendered from the device register)
    broker.passwd           Mosquitto password_file: the hub's own loopback account only
    hub.secret              that account's password (random, never logged)
    hq-signing.pub          HQ's pinned Ed25519 public key for config signatures (if given)
    devices.db              SQLite: devices, their certificates, pending enrollment codes

:func:`initialize` creates it (``edge init``); :class:`Identity` loads it. Every file is written
atomically (temporary file, fsync, rename), so a crash leaves the old or the new version.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.bus.topics import Topics
from edge.files import atomic_write, fsync_dir
from edge.security import pki
from edge.security.enrollment import Grant, PendingCode, render_acl

HUB_USER = "edge-hub"
CA_KEY_CREDENTIAL = "edge-ca-key"
"""The CA key as a systemd credential (LoadCredentialEncrypted=edge-ca-key), if it was moved
out of the state directory (docs/operations.md, "Securing the store")."""
SERVER_DAYS = 365
# The CRL is re-signed well before it lapses (a lapsed CRL makes OpenSSL refuse every client).
CRL_VALID_FOR = dt.timedelta(days=30)


class IdentityError(Exception):
    pass


def pki_dir(state_dir: Path) -> Path:
    return state_dir / "pki"


def is_initialized(state_dir: Path) -> bool:
    return (pki_dir(state_dir) / "ca.pem").is_file()


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2 password_file hash ($7$: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte
    salt), so the hub writes the file without shelling out to mosquitto_passwd."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def initialize(
    state_dir: Path,
    *,
    store_id: str,
    hub_id: str,
    names: Sequence[str],
    addresses: Sequence[str],
    hq_public_key: bytes | None,
    now: dt.datetime,
    force: bool = False,
) -> Identity:
    """Create the hub's identity. Refuses to replace an existing CA unless ``force``: every
    enrolled device trusts it, so a new CA means enrolling every device again.

    All or nothing: everything is made in ``<state_dir>/.pki-init/pki`` and renamed into place
    at the end, so an interrupted ``edge init`` leaves no half identity (a ``ca.pem`` without a
    server certificate would make the hub crash-loop, and first boot would not run again)."""
    root = pki_dir(state_dir)
    if is_initialized(state_dir) and not force:
        raise IdentityError(
            f"{root} already holds a hub CA (devices trust it); "
            "pass --force to replace it and enroll every device again"
        )
    staging = state_dir / ".pki-init"
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
    new = pki_dir(staging)
    new.mkdir(parents=True, mode=0o700)
    os.chmod(new, 0o700)
    ca_key = pki.new_key()
    ca = pki.new_ca(store_id, hub_id, ca_key, now)
    atomic_write(new / "ca.key", pki.key_pem(ca_key))
    atomic_write(new / "ca.pem", ca.pem.encode(), 0o644)
    if hq_public_key is not None:
        atomic_write(new / "hq-signing.pub", hq_public_key, 0o644)
    password = secrets.token_urlsafe(32)
    atomic_write(new / "hub.secret", password.encode())
    atomic_write(new / "broker.passwd", f"{HUB_USER}:{mosquitto_hash(password)}\n".encode())
    staged = Identity(staging, Topics(store_id), env={})
    staged.issue_server_certificate(hub_id=hub_id, names=names, addresses=addresses, now=now)
    staged.publish_rules(now)
    # The paths inside the files (none) do not name the staging directory: move it in.
    old = state_dir / ".pki-replaced"
    shutil.rmtree(old, ignore_errors=True)
    if root.exists():
        root.rename(old)
    new.rename(root)
    fsync_dir(state_dir)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return Identity(state_dir, Topics(store_id), env={})


@dataclass(frozen=True)
class Device:
    name: str
    role: str
    lane: str
    state: str  # pending | enrolled | revoked
    created_at: float
    enrolled_at: float | None
    revoked_at: float | None
    serial: str
    not_after: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "lane": self.lane,
            "state": self.state,
            "created_at": self.created_at,
            "enrolled_at": self.enrolled_at,
            "revoked_at": self.revoked_at,
            "serial": self.serial,
            "not_after": self.not_after,
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    lane TEXT NOT NULL,
    created_at REAL NOT NULL,
    enrolled_at REAL,
    revoked_at REAL,
    serial TEXT NOT NULL DEFAULT '',
    not_after REAL
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    issued_at REAL NOT NULL,
    not_after REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS codes (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
);
"""


class Identity:
    """The loaded identity: CA, server certificate, device register. Blocking I/O, small and
    rare: the async service calls it through ``asyncio.to_thread``."""

    def __init__(
        self, state_dir: Path, topics: Topics, env: Mapping[str, str] | None = None
    ) -> None:
        self.root = pki_dir(state_dir)
        if not (self.root / "ca.pem").is_file():
            raise IdentityError(f"no hub identity in {self.root}: run `edge init --store ID`")
        env = os.environ if env is None else env
        credentials = env.get("CREDENTIALS_DIRECTORY", "")
        sealed = Path(credentials, CA_KEY_CREDENTIAL) if credentials else None
        # The CA key: the systemd credential when the unit provides one (encrypted at rest,
        # bound to the machine or its TPM2), else pki/ca.key.
        self.ca_key_path = sealed if sealed and sealed.is_file() else self.root / "ca.key"
        if not self.ca_key_path.is_file():
            raise IdentityError(
                f"the hub CA's key is neither {self.root / 'ca.key'} nor the systemd credential "
                f"{CA_KEY_CREDENTIAL}: restore it, or `edge init --force` and enroll every "
                "device again"
            )
        self.topics = topics
        self.ca = x509.load_pem_x509_certificate((self.root / "ca.pem").read_bytes())
        self._db_path = self.root / "devices.db"
        with self._db() as db:
            db.executescript(_SCHEMA)

    # -- files ------------------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        return self.root / "ca.pem"

    @property
    def server_cert_path(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.root / "server.key"

    @property
    def crl_path(self) -> Path:
        return self.root / "crl.pem"

    @property
    def acl_path(self) -> Path:
        return self.root / "broker.acl"

    @property
    def passwd_path(self) -> Path:
        return self.root / "broker.passwd"

    @property
    def hub_password(self) -> str:
        return (self.root / "hub.secret").read_text().strip()

    @property
    def ca_fingerprint(self) -> str:
        return pki.fingerprint(self.ca)

    def hq_public_key(self) -> bytes | None:
        path = self.root / "hq-signing.pub"
        return path.read_bytes() if path.is_file() else None

    def server_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.server_cert_path.read_bytes())

    def _ca_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError("ca.key is not an EC private key")
        return key

    def issue_server_certificate(
        self, *, hub_id: str, names: Sequence[str], addresses: Sequence[str], now: dt.datetime
    ) -> None:
        key = pki.new_key()
        issued = pki.issue_server(
            self._ca_key(),
            self.ca,
            key,
            hub_id=hub_id,
            names=["localhost", *names],
            addresses=["127.0.0.1", *addresses],
            now=now,
            days=SERVER_DAYS,
        )
        # Key first: the broker reloads both on SIGHUP and must never see a mismatched pair
        # for long; with the key replaced first, a reload in between fails the new handshake
        # only, never an established connection.
        atomic_write(self.server_key_path, pki.key_pem(key), 0o600)
        atomic_write(self.server_cert_path, (issued.pem + self.ca_pem()).encode(), 0o644)

    def ca_pem(self) -> str:
        return self.ca.public_bytes(serialization.Encoding.PEM).decode()

    def server_needs_renewal(self, now: dt.datetime, before: dt.timedelta) -> bool:
        return self.server_certificate().not_valid_after_utc - now < before

    def crl_needs_refresh(self, now: dt.datetime) -> bool:
        if not self.crl_path.is_file():
            return True
        crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        next_update = crl.next_update_utc
        return next_update is None or next_update - now < CRL_VALID_FOR / 2

    def publish_rules(self, now: dt.datetime) -> None:
        """Write the CRL and the ACL from the device register (the broker reads them)."""
        with self._db() as db:
            revoked = db.execute(
                "SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL"
            ).fetchall()
        crl = pki.build_crl(
            self._ca_key(),
            self.ca,
            [(int(s, 16), dt.datetime.fromtimestamp(t, dt.UTC)) for s, t in revoked],
            now=now,
            valid_for=CRL_VALID_FOR,
        )
        atomic_write(self.crl_path, pki.crl_pem(crl), 0o644)
        grants = [Grant(d.name, d.role, d.lane) for d in self.devices() if d.state == "enrolled"]
        atomic_write(self.acl_path, render_acl(self.topics, HUB_USER, grants).encode(), 0o644)

    # -- the device register ----------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db_path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            yield db
        finally:
            db.close()

    def devices(self) -> list[Device]:
        with self._db() as db:
            rows = db.execute(
                "SELECT name, role, lane, created_at, enrolled_at, revoked_at, serial, not_after "
                "FROM devices ORDER BY name"
            ).fetchall()
        return [_device(row) for row in rows]

    def device(self, name: str) -> Device | None:
        with self._db() as db:
            row = db.execute(
                "SELECT name, role, lane, created_at, enrolled_at, revoked_at, serial, not_after "
                "FROM devices WHERE name = ?",
                (name,),
            ).fetchone()
        return _device(row) if row else None

    def add_pending(
        self, *, name: str, role: str, lane: str, code_hash: str, now: float, ttl_s: float
    ) -> None:
        """Record a device to enroll and its code. A device already enrolled keeps working
        until the new enrollment replaces its certificate (re-enrolling a replaced register)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            existing = db.execute("SELECT revoked_at FROM devices WHERE name = ?", (name,))
            row = existing.fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO devices (name, role, lane, created_at) VALUES (?, ?, ?, ?)",
                    (name, role, lane, now),
                )
            else:
                db.execute(
                    "UPDATE devices SET role = ?, lane = ? WHERE name = ?", (role, lane, name)
                )
            # One live code per device: a new code cancels the previous one.
            db.execute("DELETE FROM codes WHERE name = ? AND used_at IS NULL", (name,))
            db.execute(
                "INSERT INTO codes (hash, name, expires_at) VALUES (?, ?, ?)",
                (code_hash, name, now + ttl_s),
            )
            db.execute("COMMIT")

    def pending(self, code_hash: str) -> PendingCode | None:
        with self._db() as db:
            row = db.execute(
                "SELECT c.name, d.role, d.lane, c.expires_at, c.used_at FROM codes c "
                "JOIN devices d ON d.name = c.name WHERE c.hash = ?",
                (code_hash,),
            ).fetchone()
        return PendingCode(*row) if row else None

    def enroll(self, code_hash: str, issued: pki.Issued, now: float) -> bool:
        """Spend the code and record the certificate in one transaction. False if the code was
        spent meanwhile (two devices racing with one code: exactly one wins)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            spent = db.execute(
                "UPDATE codes SET used_at = ? WHERE hash = ? AND used_at IS NULL", (now, code_hash)
            )
            if spent.rowcount != 1:
                db.execute("ROLLBACK")
                return False
            (name,) = db.execute("SELECT name FROM codes WHERE hash = ?", (code_hash,)).fetchone()
            self._record(db, name, issued, now)
            # A re-enrolled device's previous certificates stop working.
            db.execute(
                "UPDATE certificates SET revoked_at = ? "
                "WHERE name = ? AND serial != ? AND revoked_at IS NULL",
                (now, name, f"{issued.serial:x}"),
            )
            db.execute(
                "UPDATE devices SET enrolled_at = ?, revoked_at = NULL WHERE name = ?", (now, name)
            )
            db.execute("COMMIT")
        return True

    def renew(self, name: str, old_serial: int, issued: pki.Issued, now: float) -> bool:
        """Record a renewed certificate. The old one stays valid until it expires: the device
        keeps its connection and uses the new certificate at its next connect."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            ok = db.execute(
                "SELECT 1 FROM certificates c JOIN devices d ON d.name = c.name "
                "WHERE c.serial = ? AND c.name = ? AND c.revoked_at IS NULL "
                "AND d.revoked_at IS NULL",
                (f"{old_serial:x}", name),
            ).fetchone()
            if ok is None:
                db.execute("ROLLBACK")
                return False
            self._record(db, name, issued, now)
            db.execute("COMMIT")
        return True

    def revoke(self, name: str, now: float) -> bool:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            done = db.execute(
                "UPDATE devices SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (now, name),
            ).rowcount
            db.execute(
                "UPDATE certificates SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (now, name),
            )
            db.execute("DELETE FROM codes WHERE name = ? AND used_at IS NULL", (name,))
            db.execute("COMMIT")
        return done == 1

    def certificate_valid(self, serial: int, name: str) -> bool:
        with self._db() as db:
            row = db.execute(
                "SELECT 1 FROM certificates c JOIN devices d ON d.name = c.name WHERE "
                "c.serial = ? AND c.name = ? AND c.revoked_at IS NULL AND d.revoked_at IS NULL",
                (f"{serial:x}", name),
            ).fetchone()
        return row is not None

    def ca_key_for_issuing(self) -> ec.EllipticCurvePrivateKey:
        return self._ca_key()

    @staticmethod
    def _record(db: sqlite3.Connection, name: str, issued: pki.Issued, now: float) -> None:
        serial = f"{issued.serial:x}"
        not_after = issued.not_after.timestamp()
        db.execute(
            "INSERT INTO certificates (serial, name, issued_at, not_after) VALUES (?, ?, ?, ?)",
            (serial, name, now, not_after),
        )
        db.execute(
            "UPDATE devices SET serial = ?, not_after = ? WHERE name = ?",
            (serial, not_after, name),
        )


def _device(row: tuple[object, ...]) -> Device:
    name, role, lane, created, enrolled, revoked, serial, not_after = row
    state = "revoked" if revoked is not None else "enrolled" if enrolled is not None else "pending"
    return Device(
        name=str(name),
        role=str(role),
        lane=str(lane),
        state=state,
        created_at=float(created),  # type: ignore[arg-type]
        enrolled_at=float(enrolled) if enrolled is not None else None,  # type: ignore[arg-type]
        revoked_at=float(revoked) if revoked is not None else None,  # type: ignore[arg-type]
        serial=str(serial),
        not_after=float(not_after) if not_after is not None else None,  # type: ignore[arg-type]
    )
