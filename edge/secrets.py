"""Secrets at rest: the NetSuite and HQ credentials, sealed with a key kept outside the state dir.

Theory of operation
-------------------
The credentials live in one file, ``<state_dir>/secrets.sealed`` (mode 0600)::

    {"format": "edge-secrets/1",
     "key_id": "<16 hex digits: HMAC-SHA256(key, 'edge-secrets key id'), names the key>",
     "secrets": {"netsuite.consumer_secret": "<base64: 12-byte nonce | ciphertext | 16-byte tag>",
                 ...}}

Each value is sealed on its own with AES-256-GCM under a fresh random nonce, and its name is the
associated data: a value moved under another name, or any flipped bit, fails authentication.
Names are not secret (``edge secret list`` needs no key); values are never logged, printed or
put in an exception.

The 32-byte key never lives in the state directory (a copy of ``/var/lib/edge`` alone opens
nothing). :func:`load_key` looks, in this order, at:

1. an explicit key file (``edge secret --key-file PATH``, or the settings' key file);
2. the systemd credential ``$CREDENTIALS_DIRECTORY/edge-secrets-key`` (the unit's
   ``LoadCredentialEncrypted=edge-secrets-key``: encrypted at rest by ``systemd-creds``, bound
   to this machine or its TPM2, handed to the hub in memory);
3. the key file named by ``$EDGE_SECRETS_KEY_FILE``.

A key file must be a regular file that neither group nor others may read (0600 or 0400), else it
is refused: a key that anyone on the box can read protects nothing. It holds the key as 64 hex
digits (``edge secret init-key PATH`` writes one) or as 32 raw bytes.

A setting refers to a sealed secret by name: ``consumer_secret = "secret:netsuite.consumer_secret"``
(in the TOML file or an ``EDGE__...`` variable). :func:`resolve_secrets` replaces each such value
with the secret when the settings are loaded for running; the key is loaded only if some setting
refers to a secret, so a hub without sealed secrets needs no key.

Writes are read-modify-write under an exclusive lock (``.secrets.lock``), to a temporary file
that is fsynced and renamed over the old one, then the directory is fsynced: a crash leaves the
old file or the new one. Run as root (a technician's ``sudo edge secret set``), the new file is
given to the state directory's owner, so the hub (User=edge) can still read it.

Errors (each has a stable ``code``; none is retryable: a person has to act)::

    SecretsError                 base
    ├── SecretsKeyError          the key: SECRETS_KEY_MISSING, SECRETS_KEY_UNREADABLE,
    │                            SECRETS_KEY_MODE, SECRETS_KEY_INVALID, SECRETS_KEY_IN_STATE_DIR,
    │                            SECRETS_KEY_EXISTS
    ├── SecretsFileError         the sealed file: SECRETS_KEY_MISMATCH (sealed with another key),
    │                            SECRETS_TAMPERED (authentication failed), SECRETS_FILE_INVALID,
    │                            SECRETS_FILE_UNREADABLE
    └── SecretLookupError        one secret: SECRET_NOT_FOUND, SECRET_NAME_INVALID, SECRET_EMPTY,
                                 SECRET_TOO_LARGE
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.files import atomic_write, fsync_dir

log = logging.getLogger(__name__)

FORMAT = "edge-secrets/1"
SEALED_FILE = "secrets.sealed"
LOCK_FILE = ".secrets.lock"
CREDENTIAL_NAME = "edge-secrets-key"
ENV_KEY_FILE = "EDGE_SECRETS_KEY_FILE"
REFERENCE_PREFIX = "secret:"
KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_MAX_FILE_BYTES = 1024 * 1024
_MAX_VALUE_BYTES = 64 * 1024

S = TypeVar("S", bound=msgspec.Struct)


class SecretsError(Exception):
    """Secrets cannot be used as asked. Not retryable: a person has to act (the message says
    what to do)."""

    retryable = False

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{message} ({code})")


class SecretsKeyError(SecretsError):
    """The key is missing, unreadable, too widely readable, malformed or misplaced."""


class SecretsFileError(SecretsError):
    """The sealed file cannot be opened with this key: another key, tampering, not our format."""


class SecretLookupError(SecretsError):
    """One secret: not sealed, an invalid name, or an empty value."""


# -- the key ------------------------------------------------------------------------------------


class SecretsKey:
    """The 256-bit key and where it came from. Its bytes never appear in a repr or a log."""

    __slots__ = ("_material", "source")

    def __init__(self, material: bytes, source: str) -> None:
        if len(material) != KEY_BYTES:
            raise SecretsKeyError("SECRETS_KEY_INVALID", f"{source}: not a {KEY_BYTES}-byte key")
        self._material = material
        self.source = source

    @property
    def key_id(self) -> str:
        """Names the key in the sealed file without revealing it (an HMAC under the key)."""
        return hmac.new(self._material, b"edge-secrets key id", hashlib.sha256).hexdigest()[:16]

    def aead(self) -> AESGCM:
        return AESGCM(self._material)

    def __repr__(self) -> str:
        return f"SecretsKey(source={self.source!r}, key_id={self.key_id!r})"


def load_key(
    *,
    key_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    state_dir: Path | None = None,
) -> SecretsKey:
    """The key, from the first of: ``key_file``, the systemd credential, ``$EDGE_SECRETS_KEY_FILE``.

    A key file inside ``state_dir`` is refused (SECRETS_KEY_IN_STATE_DIR), as is one readable by
    group or others (SECRETS_KEY_MODE).
    """
    env = os.environ if env is None else env
    if key_file:
        return _read_key_file(Path(key_file), state_dir)
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / CREDENTIAL_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SecretsKeyError(
                "SECRETS_KEY_UNREADABLE", f"systemd credential {path}: {exc.strerror}"
            ) from None
        else:
            return SecretsKey(
                _parse_key(data, f"systemd credential {CREDENTIAL_NAME}"),
                source=f"systemd credential {CREDENTIAL_NAME}",
            )
    if env.get(ENV_KEY_FILE):
        return _read_key_file(Path(env[ENV_KEY_FILE]), state_dir)
    raise SecretsKeyError(
        "SECRETS_KEY_MISSING",
        "no key for the sealed secrets: give --key-file PATH, set "
        f"{ENV_KEY_FILE}, or run under the unit with its {CREDENTIAL_NAME} credential "
        '(docs/operations.md, "Secrets")',
    )


def generate_key_file(path: Path, *, state_dir: Path | None = None) -> SecretsKey:
    """Create a new random key at ``path`` (mode 0600, 64 hex digits and a newline).

    Never overwrites (SECRETS_KEY_EXISTS): the secrets sealed with the old key would be lost.
    """
    _refuse_inside(path, state_dir)
    material = os.urandom(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise SecretsKeyError(
            "SECRETS_KEY_EXISTS",
            f"{path} already exists; a new key there would leave the secrets sealed with it "
            "unreadable (remove it yourself if that is what you want)",
        ) from None
    except OSError as exc:
        raise SecretsKeyError("SECRETS_KEY_UNREADABLE", f"{path}: {exc.strerror}") from None
    try:
        os.write(fd, material.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    log.info("secrets: new key written to %s", path)
    return SecretsKey(material, source=f"key file {path}")


def _read_key_file(path: Path, state_dir: Path | None) -> SecretsKey:
    _refuse_inside(path, state_dir)
    source = f"key file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretsKeyError(
            "SECRETS_KEY_MISSING", f"{source} does not exist (create one: edge secret init-key)"
        ) from None
    except OSError as exc:
        raise SecretsKeyError("SECRETS_KEY_UNREADABLE", f"{source}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SecretsKeyError("SECRETS_KEY_INVALID", f"{source} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SecretsKeyError(
                "SECRETS_KEY_MODE",
                f"{source} is readable or writable by group or others (mode {mode:04o}); "
                f"refusing it: chmod 600 {path}",
            )
        data = fh.read(4 * KEY_BYTES)
    return SecretsKey(_parse_key(data, source), source=source)


def _parse_key(data: bytes, source: str) -> bytes:
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) == KEY_BYTES:
        return data
    raise SecretsKeyError(
        "SECRETS_KEY_INVALID",
        f"{source}: not a key ({2 * KEY_BYTES} hex digits or {KEY_BYTES} raw bytes); "
        "make one with edge secret init-key",
    )


def _refuse_inside(path: Path, state_dir: Path | None) -> None:
    if state_dir is None:
        return
    if path.resolve().is_relative_to(state_dir.resolve()):
        raise SecretsKeyError(
            "SECRETS_KEY_IN_STATE_DIR",
            f"{path} is inside the state directory {state_dir}: a copy of that directory would "
            "carry the key with the secrets; keep it elsewhere (e.g. /etc/credstore/)",
        )


# -- the sealed file ---------------------------------------------------------------------------


class _Sealed(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    key_id: str
    secrets: dict[str, str]


class SecretStore:
    """The sealed secrets of one state directory.

    ``key`` may be a loader, called at the first operation that needs the key (so listing
    names, or resolving settings that refer to no secret, needs none). Not thread-safe; safe
    across processes (writes take an exclusive lock).
    """

    def __init__(self, path: Path, key: SecretsKey | Callable[[], SecretsKey]) -> None:
        self.path = path
        self._key = key

    @property
    def key(self) -> SecretsKey:
        """The key (loaded now if it was given as a loader); :class:`SecretsKeyError`."""
        if not isinstance(self._key, SecretsKey):
            self._key = self._key()
        return self._key

    def names(self) -> list[str]:
        """The names sealed in the file (no key needed)."""
        sealed = self._read()
        return sorted(sealed.secrets) if sealed else []

    def get(self, name: str, *, setting: str = "") -> str:
        """The value of ``name``. ``setting`` (the dotted key referring to it) goes into errors."""
        _check_name(name)
        sealed = self._read()
        where = f"{setting} refers to secret {name!r}, but it" if setting else f"secret {name!r}"
        if sealed is None or name not in sealed.secrets:
            raise SecretLookupError(
                "SECRET_NOT_FOUND",
                f"{where} is not sealed in {self.path} (edge secret set {name})",
            )
        key = self.key
        self._check_key(sealed, key)
        return _open(key, name, sealed.secrets[name], self.path)

    def set(self, name: str, value: str) -> None:
        """Seal ``value`` under ``name``, replacing any previous value."""
        _check_name(name)
        if not value:
            raise SecretLookupError("SECRET_EMPTY", f"refusing an empty value for {name!r}")
        plaintext = value.encode()
        if len(plaintext) > _MAX_VALUE_BYTES:
            raise SecretLookupError(
                "SECRET_TOO_LARGE", f"the value of {name!r} is over {_MAX_VALUE_BYTES} bytes"
            )
        key = self.key
        with self._locked():
            sealed = self._read() or _Sealed(FORMAT, key.key_id, {})
            self._check_key(sealed, key)
            # Never extend a file that does not authenticate: check every value first.
            for other, box in sealed.secrets.items():
                _open(key, other, box, self.path)
            secrets = dict(sealed.secrets)
            secrets[name] = _seal(key, name, plaintext)
            self._write(_Sealed(FORMAT, key.key_id, secrets))
        log.info("secrets: %s sealed in %s", name, self.path)

    def remove(self, name: str) -> bool:
        """Forget ``name``; False if it was not sealed. Needs no key (a lost key's secrets can
        still be cleared)."""
        _check_name(name)
        with self._locked():
            sealed = self._read()
            if sealed is None or name not in sealed.secrets:
                return False
            secrets = {k: v for k, v in sealed.secrets.items() if k != name}
            self._write(_Sealed(FORMAT, sealed.key_id, secrets))
        log.info("secrets: %s removed from %s", name, self.path)
        return True

    def _check_key(self, sealed: _Sealed, key: SecretsKey) -> None:
        if sealed.secrets and not hmac.compare_digest(sealed.key_id, key.key_id):
            raise SecretsFileError(
                "SECRETS_KEY_MISMATCH",
                f"{self.path} was sealed with another key than the {key.source} "
                f"(key id {sealed.key_id}, this key {key.key_id}): use the key it was sealed "
                "with, or remove its secrets and set them again",
            )

    def _read(self) -> _Sealed | None:
        try:
            with self.path.open("rb") as fh:
                data = fh.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretsFileError(
                "SECRETS_FILE_UNREADABLE", f"{self.path}: {exc.strerror}"
            ) from None
        if len(data) > _MAX_FILE_BYTES:
            raise SecretsFileError("SECRETS_FILE_INVALID", f"{self.path}: larger than 1 MiB")
        try:
            sealed = msgspec.json.decode(data, type=_Sealed)
        except msgspec.DecodeError as exc:
            raise SecretsFileError(
                "SECRETS_FILE_INVALID", f"{self.path}: not a sealed secrets file ({exc})"
            ) from None
        if sealed.format != FORMAT:
            raise SecretsFileError(
                "SECRETS_FILE_INVALID", f"{self.path}: format {sealed.format!r}, not {FORMAT!r}"
            )
        return sealed

    def _write(self, sealed: _Sealed) -> None:
        """Atomically and durably (edge.files.atomic_write), mode 0600; as root, the file goes
        to the state directory's owner so the hub can still read it."""
        data = json.dumps(msgspec.to_builtins(sealed), indent=1, sort_keys=True).encode() + b"\n"
        atomic_write(self.path, data, 0o600, owner_of=self.path.parent)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def open_store(
    state_dir: Path,
    *,
    key_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> SecretStore:
    """The store of ``state_dir``; its key is loaded (:func:`load_key`) when first needed."""
    return SecretStore(
        state_dir / SEALED_FILE,
        lambda: load_key(key_file=key_file, env=env, state_dir=state_dir),
    )


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise SecretLookupError(
            "SECRET_NAME_INVALID",
            f"{name!r} is not a secret name: 1-128 of a-z, 0-9, '.', '_', '-' "
            "(e.g. netsuite.consumer_secret)",
        )


def _associated_data(name: str) -> bytes:
    return FORMAT.encode() + b"\0" + name.encode()


def _seal(key: SecretsKey, name: str, plaintext: bytes) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    box = nonce + key.aead().encrypt(nonce, plaintext, _associated_data(name))
    return base64.b64encode(box).decode("ascii")


def _open(key: SecretsKey, name: str, encoded: str, path: Path) -> str:
    tampered = SecretsFileError(
        "SECRETS_TAMPERED",
        f"{path}: secret {name!r} does not authenticate (the file was altered or damaged); "
        "set it again",
    )
    try:
        box = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise tampered from None
    if len(box) < _NONCE_BYTES + _TAG_BYTES:
        raise tampered
    try:
        plaintext = key.aead().decrypt(
            box[:_NONCE_BYTES], box[_NONCE_BYTES:], _associated_data(name)
        )
        return plaintext.decode()
    except (InvalidTag, UnicodeDecodeError):
        raise tampered from None


# -- settings that refer to secrets --------------------------------------------------------------


def references(settings: msgspec.Struct) -> dict[str, str]:
    """Every setting whose value is ``secret:NAME``: dotted key -> NAME."""
    found: dict[str, str] = {}

    def visit(node: Any, where: str) -> Any:
        if isinstance(node, str) and node.startswith(REFERENCE_PREFIX):
            found[where] = node[len(REFERENCE_PREFIX) :]
        return node

    _walk(settings, "", visit)
    return found


def resolve_secrets(settings: S, store: SecretStore) -> S:
    """A copy of ``settings`` with every ``secret:NAME`` value replaced by the sealed secret.

    Returns ``settings`` itself when nothing refers to a secret (and then loads no key).
    Raises :class:`SecretsError` naming the setting and the secret, never a value.
    """
    wanted = references(settings)
    if not wanted:
        return settings

    def replace(node: Any, where: str) -> Any:
        if isinstance(node, str) and node.startswith(REFERENCE_PREFIX):
            return store.get(node[len(REFERENCE_PREFIX) :], setting=where)
        return node

    resolved: S = _walk(settings, "", replace)
    log.info(
        "secrets: %d setting(s) taken from %s with the %s",
        len(wanted),
        store.path,
        store.key.source,
    )
    return resolved


def _walk(node: Any, where: str, visit: Callable[[Any, str], Any]) -> Any:
    """Rebuild ``node`` with ``visit`` applied to every leaf; unchanged parts are kept as is."""
    if isinstance(node, msgspec.Struct):
        changes = {}
        for field in msgspec.structs.fields(node):
            value = getattr(node, field.name)
            new = _walk(value, f"{where}.{field.name}" if where else field.name, visit)
            if new is not value:
                changes[field.name] = new
        return msgspec.structs.replace(node, **changes) if changes else node
    if isinstance(node, list):
        items = [_walk(item, f"{where}[{i}]", visit) for i, item in enumerate(node)]
        return items if any(a is not b for a, b in zip(items, node, strict=True)) else node
    if isinstance(node, dict):
        entries = {k: _walk(v, f"{where}.{k}", visit) for k, v in node.items()}
        return entries if any(entries[k] is not node[k] for k in node) else node
    return visit(node, where)
