"""Technician login for the web console: local accounts, password hashing, lockout, sessions.

Theory of operation
-------------------
A store hub has no directory service, so technicians have local accounts in one JSON file
(:class:`Accounts`). Passwords are hashed with scrypt and stored as a self-describing string,
``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>``, so the cost can be raised later without breaking
the hashes already written (:func:`verify_password` reads the cost from the string, within
bounds, so a tampered file cannot make the hub allocate gigabytes).

Two policies sit in front of and behind a password check, both pure (no I/O, no clock: every
method takes ``now``, seconds on any monotonic-enough clock, the same one for every call):

- :class:`LoginGuard` counts failed logins per account name and per client address inside a
  sliding window; too many locks that name (or address) for a while. It counts names that do
  not exist exactly like names that do, so a lockout never tells whether an account exists.
- :class:`SessionStore` holds the logged-in sessions in memory: a random session id (the
  cookie), a per-session CSRF token, an idle timeout and an absolute lifetime. A hub restart
  logs everybody out, which is acceptable for a technician console.

Secrets are never logged: log lines carry account names only, and a name that is not an
account is not logged at all (people type their password into the name field).

Calling contract: :class:`Accounts` does file I/O and scrypt (tens of milliseconds and 16 MiB
per hash): call it off the event loop. :class:`LoginGuard` and :class:`SessionStore` are cheap
and not thread-safe: call them from the event loop only.

Errors
------
::

    AuthError                     anything this module refuses; retrying the same call cannot help
    ├── WeakPassword              (also ValueError) empty, shorter than 8 or longer than 1024
    ├── InvalidAccountName        (also ValueError) not 1-64 of [A-Za-z0-9._@-]
    ├── AccountExists             add() of a name already present
    ├── UnknownAccount            set_password()/remove() of a name not present
    └── AccountsFileError         the accounts file cannot be read, parsed or written (carries
                                  the path and the step; fix the file or the disk, then retry)
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

# --- errors -------------------------------------------------------------------------------


class AuthError(Exception):
    """Base of this module's errors."""


class WeakPassword(AuthError, ValueError):
    """The password does not meet the minimum policy."""


class InvalidAccountName(AuthError, ValueError):
    """An account name must be 1-64 characters of letters, digits and ``._@-``."""


class AccountExists(AuthError):
    def __init__(self, name: str) -> None:
        super().__init__(f"account {name!r} already exists")
        self.name = name


class UnknownAccount(AuthError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no account named {name!r}")
        self.name = name


class AccountsFileError(AuthError):
    def __init__(self, path: Path, step: str, detail: str) -> None:
        super().__init__(f"accounts file {path}: {step}: {detail}")
        self.path = path
        self.step = step


# --- password hashing ---------------------------------------------------------------------

MIN_PASSWORD_LENGTH: Final = 8
# Bounds the work one login costs (scrypt's first step is PBKDF2 over the whole password).
MAX_PASSWORD_LENGTH: Final = 1024

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32

# What verify_password accepts from a stored hash: a damaged or hostile accounts file must not
# make one login take minutes or gigabytes. scrypt's memory is about 128 * r * n bytes.
_MAX_SCRYPT_MEMORY: Final = 64 * 2**20
_MAX_SCRYPT_WORK: Final = 2**20  # n * r * p; production is 2**17
_SCHEME: Final = "scrypt"


def _encode_secret(password: str) -> bytes:
    # surrogatepass: any Python str hashes (and verifies) instead of raising on a lone surrogate.
    return password.encode("utf-8", "surrogatepass")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + 2**20
    return hashlib.scrypt(
        _encode_secret(password), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem
    )


def check_password_policy(password: str) -> None:
    """Raise :class:`WeakPassword` unless ``password`` is 8 to 1024 characters."""
    if not password:
        raise WeakPassword("password must not be empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$n$r$p$<salt b64>$<key b64>`` for ``password`` with a fresh 16-byte salt.

    Raises :class:`WeakPassword` if the password fails the policy. Smaller ``n`` is for tests
    only; the default is the production cost.
    """
    check_password_policy(password)
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, n, r, p, KEY_BYTES)
    return f"{_SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


@dataclass(frozen=True, slots=True)
class _Parsed:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


_DECIMAL = re.compile(r"[1-9][0-9]{0,9}")


def _parse_hash(encoded: str) -> _Parsed | None:
    """The parts of a stored hash, or None if it is malformed or outside the accepted costs."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    if not all(_DECIMAL.fullmatch(field) for field in parts[1:4]):
        return None
    n, r, p = (int(field) for field in parts[1:4])
    if n < 2 or n & (n - 1) or 128 * r * n > _MAX_SCRYPT_MEMORY or n * r * p > _MAX_SCRYPT_WORK:
        return None
    try:
        salt = base64.b64decode(parts[4].encode("ascii"), validate=True)
        key = base64.b64decode(parts[5].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return _Parsed(n, r, p, salt, key)


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the stored hash ``encoded``; never raises.

    A malformed hash, or one whose cost is outside the accepted bounds, matches nothing.
    """
    parsed = _parse_hash(encoded)
    if parsed is None or len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        key = _scrypt(password, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.key))
    except (ValueError, MemoryError):  # OpenSSL refusing a combination the bounds let through
        return False
    return hmac.compare_digest(key, parsed.key)


# --- accounts -----------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
ROLES: Final[tuple[str, ...]] = ("technician", "admin")
_FILE_VERSION: Final = 1


def check_account_name(name: str) -> None:
    """Raise :class:`InvalidAccountName` unless ``name`` is 1-64 of ``[A-Za-z0-9._@-]``.

    The restriction keeps names safe to log and to show (no spaces, quotes or line breaks).
    """
    if not _NAME.fullmatch(name):
        raise InvalidAccountName(
            "account name must be 1-64 characters of letters, digits, '.', '_', '@' or '-'"
        )


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str
    password_hash: str


class Accounts:
    """The technicians' accounts, kept in a JSON file (written atomically, mode 0600).

    File layout: ``{"version": 1, "accounts": {"<name>": {"role": "...", "hash": "scrypt$..."}}}``.
    A missing file is no accounts. Every change is written before the method returns.
    :meth:`verify` re-reads the file when it changed on disk, so an account added by the CLI
    while the hub runs can log in without a restart.

    Blocking (file I/O and scrypt): call from a worker thread when on the event loop.
    """

    def __init__(self, path: Path, accounts: dict[str, Account], *, n: int = SCRYPT_N) -> None:
        self.path = path
        self._accounts = accounts
        self._n = n
        self._stamp = _file_stamp(path)
        self._dummy_hash: str | None = None

    @classmethod
    def load(cls, path: Path | str, *, n: int = SCRYPT_N) -> Accounts:
        """Read the accounts file at ``path`` (missing: none yet). ``n``: scrypt cost of new
        hashes; lower it in tests only."""
        path = Path(path)
        return cls(path, _read_accounts(path), n=n)

    def names(self) -> list[str]:
        """The account names, sorted."""
        return sorted(self._accounts)

    def role(self, name: str) -> str | None:
        account = self._accounts.get(name)
        return account.role if account else None

    def add(self, name: str, password: str, role: str = "technician") -> None:
        """Create an account. Raises InvalidAccountName, WeakPassword, AccountExists,
        AccountsFileError; ValueError for an unknown role."""
        check_account_name(name)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self._refresh()
        if name in self._accounts:
            raise AccountExists(name)
        new = dict(self._accounts)
        new[name] = Account(name, role, hash_password(password, n=self._n))
        self._write(new)
        log.info("console account %s added (role %s)", name, role)

    def set_password(self, name: str, password: str) -> None:
        """Replace the password of ``name``. The caller should also end the account's sessions
        (:meth:`SessionStore.revoke_all`)."""
        self._refresh()
        account = self._accounts.get(name)
        if account is None:
            raise UnknownAccount(name)
        new = dict(self._accounts)
        new[name] = Account(name, account.role, hash_password(password, n=self._n))
        self._write(new)
        log.info("console account %s: password changed", name)

    def remove(self, name: str) -> None:
        """Delete the account ``name``. The caller should also end its sessions."""
        self._refresh()
        if name not in self._accounts:
            raise UnknownAccount(name)
        new = {k: v for k, v in self._accounts.items() if k != name}
        self._write(new)
        log.info("console account %s removed", name)

    def verify(self, name: str, password: str) -> Account | None:
        """The account if ``name`` exists and ``password`` is its password, else None.

        An unknown name costs one scrypt like a known one, so timing does not reveal which
        names exist. Never raises for any input strings; a file that fails to re-read keeps
        the accounts last read (and logs why).
        """
        try:
            self._refresh()
        except AccountsFileError as exc:
            log.error("%s; keeping the accounts last read", exc)
        account = self._accounts.get(name)
        if account is None:
            if self._dummy_hash is None:
                self._dummy_hash = hash_password(secrets.token_urlsafe(16), n=self._n)
            verify_password(password, self._dummy_hash)
            return None
        return account if verify_password(password, account.password_hash) else None

    # -- file ------------------------------------------------------------------------------

    def _refresh(self) -> None:
        stamp = _file_stamp(self.path)
        if stamp != self._stamp:
            self._accounts = _read_accounts(self.path)
            self._stamp = stamp

    def _write(self, accounts: dict[str, Account]) -> None:
        body = {
            "version": _FILE_VERSION,
            "accounts": {
                a.name: {"role": a.role, "hash": a.password_hash}
                for a in sorted(accounts.values(), key=lambda a: a.name)
            },
        }
        _write_atomically(self.path, (json.dumps(body, indent=2) + "\n").encode("utf-8"))
        self._accounts = accounts
        self._stamp = _file_stamp(self.path)


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_accounts(path: Path) -> dict[str, Account]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AccountsFileError(path, "read", str(exc)) from exc
    try:
        doc: Any = json.loads(raw)
    except ValueError as exc:
        raise AccountsFileError(path, "parse", str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("version") != _FILE_VERSION:
        raise AccountsFileError(path, "parse", f"expected an object with version {_FILE_VERSION}")
    entries = doc.get("accounts")
    if not isinstance(entries, dict):
        raise AccountsFileError(path, "parse", "'accounts' must be an object")
    accounts: dict[str, Account] = {}
    for name, entry in entries.items():
        if (
            not _NAME.fullmatch(name)
            or not isinstance(entry, dict)
            or entry.get("role") not in ROLES
            or not isinstance(entry.get("hash"), str)
        ):
            raise AccountsFileError(path, "parse", f"account {name!r} is malformed")
        accounts[name] = Account(name, entry["role"], entry["hash"])
    return accounts


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: never a half-written file, mode 0600 from the start."""
    directory = path.parent
    # 1. Write a temporary file next to the target (same filesystem, so the rename is atomic),
    #    created 0600 so the hashes are never readable by others, not even briefly.
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise AccountsFileError(path, "create temporary file", str(exc)) from exc
    tmp = Path(tmp_name)
    try:
        # 2. Fill it and push it to the disk before it takes the target's name.
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise AccountsFileError(path, "write temporary file", str(exc)) from exc
        # 3. Rename over the target: readers see the old file or the new one, nothing between.
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise AccountsFileError(path, "rename into place", str(exc)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # 4. Make the rename itself durable.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise AccountsFileError(path, "sync directory", str(exc)) from exc


# --- lockout ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Locked:
    """Logins are refused until ``until`` (same clock as ``now``) because of ``scope``."""

    until: float
    scope: Literal["account", "address"]

    def retry_after(self, now: float) -> int:
        """Whole seconds to wait, at least 1 (for a ``Retry-After`` header)."""
        return max(1, math.ceil(self.until - now))


@dataclass(slots=True)
class _Failures:
    times: collections.deque[float]
    locked_until: float = 0.0


class LoginGuard:
    """Failed-login throttling per account name and per client address. Pure: ``now`` in.

    ``max_failures`` failures for one name within ``window`` seconds lock that name for
    ``lockout`` seconds; ``max_address_failures`` failures from one address (any names) within
    the window lock that address. Names are tracked whether or not they exist. A lock starts
    a fresh count: once it expires the name gets ``max_failures`` tries again.

    Memory is bounded: at most ``max_tracked`` names and as many addresses; past that the
    entry seen least recently is dropped.

    Calling contract: :meth:`check` before verifying a password (refuse if it returns a
    :class:`Locked`), then exactly one of :meth:`failed` or :meth:`succeeded`.
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 900.0,
        lockout: float = 300.0,
        max_address_failures: int = 20,
        max_tracked: int = 10_000,
    ) -> None:
        if max_failures < 1 or max_address_failures < 1 or max_tracked < 1:
            raise ValueError("limits must be at least 1")
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_address_failures = max_address_failures
        self.max_tracked = max_tracked
        self._names: collections.OrderedDict[str, _Failures] = collections.OrderedDict()
        self._addrs: collections.OrderedDict[str, _Failures] = collections.OrderedDict()

    def check(self, name: str, addr: str, now: float) -> Locked | None:
        """None if a login for ``name`` from ``addr`` may be tried now, else the lock."""
        locks: list[Locked] = []
        name_entry = self._names.get(name)
        if name_entry is not None and name_entry.locked_until > now:
            locks.append(Locked(name_entry.locked_until, "account"))
        addr_entry = self._addrs.get(addr)
        if addr_entry is not None and addr_entry.locked_until > now:
            locks.append(Locked(addr_entry.locked_until, "address"))
        return max(locks, key=lambda lock: lock.until) if locks else None

    def failed(self, name: str, addr: str, now: float) -> Locked | None:
        """Record a failed login; returns the lock if this failure started one."""
        lock = None
        if self._record(self._names, name, now, self.max_failures):
            lock = Locked(now + self.lockout, "account")
            log.warning(
                "console login locked for %s seconds after %s failures",
                self.lockout,
                self.max_failures,
            )
        if self._record(self._addrs, addr, now, self.max_address_failures):
            lock = Locked(now + self.lockout, "address")
            log.warning("console logins from %s locked for %s seconds", addr, self.lockout)
        return lock

    def succeeded(self, name: str, addr: str, now: float) -> None:
        """Record a successful login: the name's failures are forgotten. The address keeps
        its count (it decays with the window), so one valid account cannot reset the
        throttle for guesses at others from the same machine."""
        self._names.pop(name, None)

    def _record(
        self, table: collections.OrderedDict[str, _Failures], key: str, now: float, limit: int
    ) -> bool:
        entry = table.get(key)
        if entry is None:
            entry = table[key] = _Failures(collections.deque())
            while len(table) > self.max_tracked:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        if entry.locked_until > now:
            return False  # already locked; check() should have refused this attempt
        while entry.times and entry.times[0] <= now - self.window:
            entry.times.popleft()
        entry.times.append(now)
        if len(entry.times) >= limit:
            entry.times.clear()
            entry.locked_until = now + self.lockout
            return True
        return False


# --- sessions -----------------------------------------------------------------------------


@dataclass(slots=True)
class Session:
    """A logged-in technician. ``csrf`` is the token every unsafe request must echo back."""

    name: str
    csrf: str
    created: float
    last_seen: float

    def csrf_matches(self, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token (constant-time comparison)."""
        if not token:
            return False
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.csrf.encode())


def _session_key(session_id: str) -> bytes:
    # The table is keyed by a digest of the id so a lookup's timing says nothing about it.
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


class SessionStore:
    """Logged-in sessions in memory. Pure: ``now`` in.

    A session ends ``idle_timeout`` seconds after it was last used, ``max_lifetime`` seconds
    after it was created whatever its use, on :meth:`revoke` / :meth:`revoke_all`, or when
    more than ``max_sessions`` exist (the least recently used goes first).
    """

    def __init__(
        self,
        *,
        idle_timeout: float = 30 * 60.0,
        max_lifetime: float = 12 * 3600.0,
        max_sessions: int = 1000,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.max_sessions = max_sessions
        self._sessions: collections.OrderedDict[bytes, Session] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, name: str, now: float) -> tuple[str, str]:
        """A new session for ``name``: (session id for the cookie, CSRF token)."""
        self._prune(now)
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        self._sessions[_session_key(session_id)] = Session(name, csrf, now, now)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session_id, csrf

    def get(self, session_id: str, now: float) -> Session | None:
        """The live session for ``session_id`` (its idle timer restarts), or None if unknown
        or expired (an expired one is dropped)."""
        key = _session_key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if self._expired(session, now):
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def revoke(self, session_id: str) -> bool:
        """End one session (logout). False if it did not exist."""
        return self._sessions.pop(_session_key(session_id), None) is not None

    def revoke_all(self, name: str) -> int:
        """End every session of ``name`` (password changed, account removed); how many."""
        keys = [k for k, s in self._sessions.items() if s.name == name]
        for key in keys:
            del self._sessions[key]
        return len(keys)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_seen >= self.idle_timeout
            or now - session.created >= self.max_lifetime
        )

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]
