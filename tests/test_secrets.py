"""Secrets at rest (edge.secrets, issue 7 item 5): real files, real AES-GCM, the real CLI process.

Each test names the failure it prevents: a credential readable from a copy of the state
directory, a key anyone on the box can read, a wrong or altered file accepted, a secret in a log
line, an error message or the CLI's output, a file the hub can no longer read after a
technician's `sudo edge secret set`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import threading
from pathlib import Path

import msgspec
import pytest

from edge.secrets import (
    CREDENTIAL_NAME,
    ENV_KEY_FILE,
    SEALED_FILE,
    SecretLookupError,
    SecretsError,
    SecretsFileError,
    SecretsKey,
    SecretsKeyError,
    SecretStore,
    generate_key_file,
    load_key,
    open_store,
    references,
    resolve_secrets,
)
from edge.settings import load_settings, settings_from_dict
from edge.sim.process import write_config

CONSUMER_SECRET = "cs-7f3a9d1e-NEVER-IN-A-LOG-5b2c"
TOKEN_SECRET = "ts-0c4e8b2a-NEVER-IN-A-LOG-91d7"
HQ_TOKEN = "hq-3d5f7a9c-NEVER-IN-A-LOG-e1b3"
PLAINTEXTS = (CONSUMER_SECRET, TOKEN_SECRET, HQ_TOKEN)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """Outside the state directory, as /etc/credstore is on the appliance."""
    directory = tmp_path / "credstore"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def key(key_dir: Path, state_dir: Path) -> SecretsKey:
    return generate_key_file(key_dir / "edge-secrets-key", state_dir=state_dir)


def _code(error: pytest.ExceptionInfo[SecretsError]) -> str:
    return error.value.code


# -- round trip and the file on disk -----------------------------------------------------------


def test_round_trip_through_a_fresh_store(state_dir: Path, key: SecretsKey, key_dir: Path) -> None:
    store = SecretStore(state_dir / SEALED_FILE, key)
    store.set("netsuite.consumer_secret", CONSUMER_SECRET)
    store.set("netsuite.token_secret", TOKEN_SECRET)
    store.set("netsuite.token_secret", TOKEN_SECRET + "-rotated")
    pem = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
    store.set("netsuite.private_key", pem)

    # Another process, later: only the key file and the state directory.
    again = open_store(state_dir, key_file=key_dir / "edge-secrets-key", env={})
    assert again.names() == [
        "netsuite.consumer_secret",
        "netsuite.private_key",
        "netsuite.token_secret",
    ]
    assert again.get("netsuite.consumer_secret") == CONSUMER_SECRET
    assert again.get("netsuite.token_secret") == TOKEN_SECRET + "-rotated"
    assert again.get("netsuite.private_key") == pem
    assert again.remove("netsuite.private_key") is True
    assert again.remove("netsuite.private_key") is False
    assert again.names() == ["netsuite.consumer_secret", "netsuite.token_secret"]


def test_sealed_file_is_0600_and_never_holds_a_plaintext(state_dir: Path, key: SecretsKey) -> None:
    """The bytes on disk: no secret in clear, nor base64- or hex-encoded; no temporary left."""
    store = SecretStore(state_dir / SEALED_FILE, key)
    for name, value in zip(("a", "b", "c"), PLAINTEXTS, strict=True):
        store.set(name, value)
    sealed = state_dir / SEALED_FILE
    assert sealed.stat().st_mode & 0o777 == 0o600
    text = sealed.read_bytes().decode()
    for value in PLAINTEXTS:
        for encoding in (value, base64.b64encode(value.encode()).decode(), value.encode().hex()):
            assert encoding not in text, value
    assert key.key_id in text  # the key is named, not included
    assert sorted(p.name for p in state_dir.iterdir()) == [".secrets.lock", SEALED_FILE]


def test_same_value_sealed_twice_looks_different(state_dir: Path, key: SecretsKey) -> None:
    """A fresh nonce per seal: equal secrets cannot be spotted by comparing ciphertexts."""
    store = SecretStore(state_dir / SEALED_FILE, key)
    store.set("one", CONSUMER_SECRET)
    store.set("two", CONSUMER_SECRET)
    boxes = json.loads((state_dir / SEALED_FILE).read_text())["secrets"]
    assert boxes["one"] != boxes["two"]


def test_concurrent_writers_lose_nothing(state_dir: Path, key: SecretsKey) -> None:
    """Two technicians (or a script) setting at once: the lock serialises read-modify-write."""
    errors: list[BaseException] = []

    def seal(index: int) -> None:
        try:
            SecretStore(state_dir / SEALED_FILE, key).set(f"name-{index}", f"value-{index}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=seal, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    store = SecretStore(state_dir / SEALED_FILE, key)
    assert len(store.names()) == 16
    assert store.get("name-7") == "value-7"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a file to another owner")
def test_root_writes_leave_the_file_to_the_hubs_user(state_dir: Path, key: SecretsKey) -> None:
    """`sudo edge secret set` must not leave a root-owned 0600 file the hub (User=edge)
    cannot read: the file goes to the state directory's owner."""
    os.chown(state_dir, 4242, 4243)
    SecretStore(state_dir / SEALED_FILE, key).set("hq.token", HQ_TOKEN)
    info = (state_dir / SEALED_FILE).stat()
    assert (info.st_uid, info.st_gid) == (4242, 4243)


# -- refused: wrong key, altered file ----------------------------------------------------------


def test_wrong_key_is_refused_and_the_file_left_alone(
    state_dir: Path, key: SecretsKey, key_dir: Path
) -> None:
    SecretStore(state_dir / SEALED_FILE, key).set("hq.token", HQ_TOKEN)
    before = (state_dir / SEALED_FILE).read_bytes()
    other = generate_key_file(key_dir / "other-key")
    store = SecretStore(state_dir / SEALED_FILE, other)
    with pytest.raises(SecretsFileError) as error:
        store.get("hq.token")
    assert _code(error) == "SECRETS_KEY_MISMATCH"
    with pytest.raises(SecretsFileError) as error:
        store.set("netsuite.token_secret", TOKEN_SECRET)
    assert _code(error) == "SECRETS_KEY_MISMATCH"
    assert (state_dir / SEALED_FILE).read_bytes() == before
    assert store.names() == ["hq.token"]  # names need no key


def _tamper(path: Path, change: dict[str, object]) -> None:
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))


def test_flipped_bit_is_refused(state_dir: Path, key: SecretsKey) -> None:
    store = SecretStore(state_dir / SEALED_FILE, key)
    store.set("hq.token", HQ_TOKEN)
    sealed = state_dir / SEALED_FILE
    box = bytearray(base64.b64decode(json.loads(sealed.read_text())["secrets"]["hq.token"]))
    box[15] ^= 0x01
    _tamper(sealed, {"secrets": {"hq.token": base64.b64encode(box).decode()}})
    with pytest.raises(SecretsFileError) as error:
        store.get("hq.token")
    assert _code(error) == "SECRETS_TAMPERED"
    # ... and nothing new is sealed on top of it.
    with pytest.raises(SecretsFileError) as error:
        store.set("netsuite.token_secret", TOKEN_SECRET)
    assert _code(error) == "SECRETS_TAMPERED"


def test_values_swapped_between_names_are_refused(state_dir: Path, key: SecretsKey) -> None:
    """The name is the associated data: the HQ token cannot be made to pass as a NetSuite
    secret by moving its ciphertext."""
    store = SecretStore(state_dir / SEALED_FILE, key)
    store.set("hq.token", HQ_TOKEN)
    store.set("netsuite.token_secret", TOKEN_SECRET)
    sealed = state_dir / SEALED_FILE
    boxes = json.loads(sealed.read_text())["secrets"]
    swapped = {
        "hq.token": boxes["netsuite.token_secret"],
        "netsuite.token_secret": boxes["hq.token"],
    }
    _tamper(sealed, {"secrets": swapped})
    for name in swapped:
        with pytest.raises(SecretsFileError) as error:
            store.get(name)
        assert _code(error) == "SECRETS_TAMPERED"


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b'{"format": "edge-secrets/9", "key_id": "x", "secrets": {}}', b"[]"],
)
def test_a_file_that_is_not_ours_is_refused(
    state_dir: Path, key: SecretsKey, content: bytes
) -> None:
    (state_dir / SEALED_FILE).write_bytes(content)
    store = SecretStore(state_dir / SEALED_FILE, key)
    with pytest.raises(SecretsFileError) as error:
        store.names()
    assert _code(error) == "SECRETS_FILE_INVALID"


def test_truncated_or_non_base64_box_is_tampered(state_dir: Path, key: SecretsKey) -> None:
    store = SecretStore(state_dir / SEALED_FILE, key)
    store.set("hq.token", HQ_TOKEN)
    for box in ("AAAA", "not base64 at all!"):
        _tamper(state_dir / SEALED_FILE, {"secrets": {"hq.token": box}})
        with pytest.raises(SecretsFileError) as error:
            store.get("hq.token")
        assert _code(error) == "SECRETS_TAMPERED"


# -- the key -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_key_file_others_can_reach_is_refused(key: SecretsKey, key_dir: Path, mode: int) -> None:
    path = key_dir / "edge-secrets-key"
    path.chmod(mode)
    with pytest.raises(SecretsKeyError) as error:
        load_key(key_file=path, env={})
    assert _code(error) == "SECRETS_KEY_MODE"
    assert f"chmod 600 {path}" in error.value.message
    assert f"{mode:04o}" in error.value.message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_file_for_the_owner_alone_is_accepted(
    key: SecretsKey, key_dir: Path, mode: int
) -> None:
    path = key_dir / "edge-secrets-key"
    path.chmod(mode)
    assert load_key(key_file=path, env={}).key_id == key.key_id


def test_key_inside_the_state_directory_is_refused(state_dir: Path) -> None:
    """A copy of the state directory must not carry the key with the secrets."""
    with pytest.raises(SecretsKeyError) as error:
        generate_key_file(state_dir / "key", state_dir=state_dir)
    assert _code(error) == "SECRETS_KEY_IN_STATE_DIR"
    assert not (state_dir / "key").exists()
    # A path outside that leads inside (a symlink) is inside.
    generate_key_file(state_dir / "key")
    (state_dir.parent / "looks-outside").symlink_to(state_dir / "key")
    with pytest.raises(SecretsKeyError) as error:
        load_key(key_file=state_dir.parent / "looks-outside", env={}, state_dir=state_dir)
    assert _code(error) == "SECRETS_KEY_IN_STATE_DIR"


def test_init_key_never_overwrites(key: SecretsKey, key_dir: Path) -> None:
    path = key_dir / "edge-secrets-key"
    before = path.read_bytes()
    with pytest.raises(SecretsKeyError) as error:
        generate_key_file(path)
    assert _code(error) == "SECRETS_KEY_EXISTS"
    assert path.read_bytes() == before
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(before) == 65
    assert before.endswith(b"\n")


def test_symlinked_or_malformed_key_is_refused(key: SecretsKey, key_dir: Path) -> None:
    link = key_dir / "link"
    link.symlink_to(key_dir / "edge-secrets-key")
    with pytest.raises(SecretsKeyError) as error:
        load_key(key_file=link, env={})
    assert _code(error) == "SECRETS_KEY_UNREADABLE"
    short = key_dir / "short"
    short.write_bytes(b"abcdef\n")
    short.chmod(0o600)
    with pytest.raises(SecretsKeyError) as error:
        load_key(key_file=short, env={})
    assert _code(error) == "SECRETS_KEY_INVALID"


def test_key_sources_in_order(key: SecretsKey, key_dir: Path, tmp_path: Path) -> None:
    """--key-file, then the systemd credential ($CREDENTIALS_DIRECTORY, raw bytes as
    systemd-creds hands them over), then $EDGE_SECRETS_KEY_FILE; none: SECRETS_KEY_MISSING."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    raw = os.urandom(32)
    (credentials / CREDENTIAL_NAME).write_bytes(raw)
    from_credential = SecretsKey(raw, "expected")
    env_file = generate_key_file(tmp_path / "env-key")
    both = {"CREDENTIALS_DIRECTORY": str(credentials), ENV_KEY_FILE: str(tmp_path / "env-key")}

    assert load_key(key_file=key_dir / "edge-secrets-key", env=both).key_id == key.key_id
    chosen = load_key(env=both)
    assert chosen.key_id == from_credential.key_id
    assert chosen.source == f"systemd credential {CREDENTIAL_NAME}"
    assert load_key(env={ENV_KEY_FILE: both[ENV_KEY_FILE]}).key_id == env_file.key_id
    # A credentials directory without our credential (another one was loaded) falls through.
    (credentials / CREDENTIAL_NAME).unlink()
    assert load_key(env=both).key_id == env_file.key_id
    with pytest.raises(SecretsKeyError) as error:
        load_key(env={})
    assert _code(error) == "SECRETS_KEY_MISSING"


def test_key_never_shows_in_its_repr(key: SecretsKey, key_dir: Path) -> None:
    material = (key_dir / "edge-secrets-key").read_text().strip()
    assert material not in repr(key)
    assert material not in str(key)


@pytest.mark.parametrize("name", ["", "UPPER", "a/b", "../x", "x" * 129, "-lead", "sp ace"])
def test_invalid_names_are_refused(state_dir: Path, key: SecretsKey, name: str) -> None:
    with pytest.raises(SecretLookupError) as error:
        SecretStore(state_dir / SEALED_FILE, key).set(name, "v")
    assert _code(error) == "SECRET_NAME_INVALID"


def test_empty_value_is_refused(state_dir: Path, key: SecretsKey) -> None:
    with pytest.raises(SecretLookupError) as error:
        SecretStore(state_dir / SEALED_FILE, key).set("hq.token", "")
    assert _code(error) == "SECRET_EMPTY"


# -- settings that refer to secrets ------------------------------------------------------------


def _netsuite_settings(state_dir: Path, **netsuite: str) -> dict[str, object]:
    return {
        "state_dir": str(state_dir),
        "outbox": {"connector": "netsuite"},
        "uplink": {
            "netsuite": {
                "account_id": "1234567_SB1",
                "auth": "tba",
                "consumer_key": "ck-public-ish",
                "consumer_secret": "secret:netsuite.consumer_secret",
                "token_id": "tid",
                "token_secret": "secret:netsuite.token_secret",
                **netsuite,
            },
            "hq_http": {"url": "https://hq.example", "token": "secret:hq.token"},
        },
    }


def test_settings_references_resolve_when_loaded_for_running(
    state_dir: Path, key: SecretsKey
) -> None:
    store = SecretStore(state_dir / SEALED_FILE, key)
    store.set("netsuite.consumer_secret", CONSUMER_SECRET)
    store.set("netsuite.token_secret", TOKEN_SECRET)
    store.set("hq.token", HQ_TOKEN)
    settings = settings_from_dict(_netsuite_settings(state_dir), "test")
    assert references(settings) == {
        "uplink.hq_http.token": "hq.token",
        "uplink.netsuite.consumer_secret": "netsuite.consumer_secret",
        "uplink.netsuite.token_secret": "netsuite.token_secret",
    }

    resolved = resolve_secrets(settings, store)

    assert resolved.uplink.netsuite.consumer_secret == CONSUMER_SECRET
    assert resolved.uplink.netsuite.token_secret == TOKEN_SECRET
    assert resolved.uplink.hq_http.token == HQ_TOKEN
    assert resolved.uplink.netsuite.consumer_key == "ck-public-ish"
    assert references(resolved) == {}
    # The loaded settings are left as they were (what `edge config show` prints).
    assert settings.uplink.netsuite.consumer_secret == "secret:netsuite.consumer_secret"
    assert resolved.uplink.netsuite.mapping is settings.uplink.netsuite.mapping


def test_environment_override_can_refer_to_a_secret(
    state_dir: Path, key: SecretsKey, key_dir: Path, tmp_path: Path
) -> None:
    SecretStore(state_dir / SEALED_FILE, key).set("hq.token", HQ_TOKEN)
    env = {
        "EDGE__STATE_DIR": str(state_dir),
        "EDGE__OUTBOX__CONNECTOR": "hq_http",
        "EDGE__UPLINK__HQ_HTTP__URL": "https://hq.example",
        "EDGE__UPLINK__HQ_HTTP__TOKEN": "secret:hq.token",
    }
    settings = load_settings(write_config(tmp_path / "edge.toml", {"store_id": "s1"}), env)
    store = open_store(state_dir, key_file=key_dir / "edge-secrets-key", env={})
    assert resolve_secrets(settings, store).uplink.hq_http.token == HQ_TOKEN


def test_settings_without_references_need_no_key(state_dir: Path) -> None:
    """A hub that seals nothing must start without any key configured."""

    def no_key() -> SecretsKey:
        raise AssertionError("the key was loaded")

    settings = settings_from_dict({"state_dir": str(state_dir)}, "test")
    assert resolve_secrets(settings, SecretStore(state_dir / SEALED_FILE, no_key)) is settings


def test_missing_secret_names_the_setting_not_a_value(state_dir: Path, key: SecretsKey) -> None:
    store = SecretStore(state_dir / SEALED_FILE, key)
    store.set("netsuite.consumer_secret", CONSUMER_SECRET)
    store.set("hq.token", HQ_TOKEN)
    settings = settings_from_dict(_netsuite_settings(state_dir), "test")
    with pytest.raises(SecretLookupError) as error:
        resolve_secrets(settings, store)
    assert _code(error) == "SECRET_NOT_FOUND"
    assert "uplink.netsuite.token_secret" in error.value.message
    assert "edge secret set netsuite.token_secret" in error.value.message
    assert CONSUMER_SECRET not in str(error.value)


def test_no_secret_in_any_log_or_error_over_a_full_cycle(
    state_dir: Path, key: SecretsKey, key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Set, resolve, rotate, fail with another key, fail on a tampered file: every log record
    (message, arguments, exception text) and every error message, at DEBUG, is free of them."""
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    store = SecretStore(state_dir / SEALED_FILE, key)
    store.set("netsuite.consumer_secret", CONSUMER_SECRET)
    store.set("netsuite.token_secret", TOKEN_SECRET)
    store.set("hq.token", HQ_TOKEN)
    resolve_secrets(settings_from_dict(_netsuite_settings(state_dir), "test"), store)
    store.set("hq.token", HQ_TOKEN + "-2")
    other = SecretStore(state_dir / SEALED_FILE, generate_key_file(key_dir / "other"))
    for action in (
        lambda: other.get("hq.token"),
        lambda: resolve_secrets(settings_from_dict(_netsuite_settings(state_dir), "t"), other),
    ):
        with pytest.raises(SecretsError) as error:
            action()
        errors.append(str(error.value))
    sealed = state_dir / SEALED_FILE
    _tamper(sealed, {"secrets": {"hq.token": base64.b64encode(b"x" * 40).decode()}})
    with pytest.raises(SecretsError) as error:
        store.get("hq.token")
    errors.append(str(error.value))

    assert caplog.records, "the cycle logs what it does (names, paths), so the check has teeth"
    logged = "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    ) + "\n".join(errors)
    key_hex = (key_dir / "edge-secrets-key").read_text().strip()
    for value in (*PLAINTEXTS, key_hex):
        assert value not in logged


# -- the CLI, as a process -----------------------------------------------------------------------


async def _cli(
    config: Path, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge.secrets_cli",
        "--config",
        str(config),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if k != ENV_KEY_FILE}, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_human_and_json(state_dir: Path, key_dir: Path, tmp_path: Path) -> None:
    """init-key, set from stdin, list, remove, in both forms; the value never printed."""
    config = write_config(tmp_path / "edge.toml", {"state_dir": str(state_dir)})
    key_file = str(key_dir / "edge-secrets-key")

    code, out, err = await _cli(config, "secret", "init-key", key_file)
    assert code == 0, err
    assert f"written to {key_file} (mode 0600)" in out
    code, out, _ = await _cli(config, "secret", "init-key", str(key_dir / "k2"), "--json")
    assert code == 0
    assert set(json.loads(out)) == {"ok", "path", "key_id"}

    code, out, err = await _cli(
        config, "secret", "--key-file", key_file, "set", "netsuite.consumer_secret",
        stdin=CONSUMER_SECRET.encode() + b"\n",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("netsuite.consumer_secret sealed in ")
    code, out, err = await _cli(
        config, "secret", "set", "hq.token", "--json",
        stdin=HQ_TOKEN.encode(), env={ENV_KEY_FILE: key_file},
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {
        "ok": True,
        "name": "hq.token",
        "path": str(state_dir / SEALED_FILE),
    }

    code, out, _ = await _cli(config, "secret", "list")  # names need no key
    assert (code, out.split()) == (0, ["hq.token", "netsuite.consumer_secret"])
    code, out, _ = await _cli(config, "secret", "list", "--json")
    assert json.loads(out)["names"] == ["hq.token", "netsuite.consumer_secret"]

    store = open_store(state_dir, key_file=key_file, env={})
    assert store.get("netsuite.consumer_secret") == CONSUMER_SECRET  # newline dropped
    assert store.get("hq.token") == HQ_TOKEN

    code, out, _ = await _cli(config, "secret", "remove", "hq.token")
    assert (code, out.strip()) == (0, f"hq.token removed from {state_dir / SEALED_FILE}")
    code, out, _ = await _cli(config, "secret", "remove", "hq.token", "--json")
    assert code == 1
    assert json.loads(out)["error"]["code"] == "SECRET_NOT_FOUND"

    code, out, _ = await _cli(config, "secret", "list", "--json")
    assert json.loads(out)["names"] == ["netsuite.consumer_secret"]


async def test_cli_refusals_exit_2_with_their_code(
    state_dir: Path, key_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "edge.toml", {"state_dir": str(state_dir)})
    code, out, err = await _cli(config, "secret", "set", "hq.token", stdin=HQ_TOKEN.encode())
    assert code == 2
    assert "SECRETS_KEY_MISSING" in err
    assert HQ_TOKEN not in out + err

    loose = key_dir / "loose"
    generate_key_file(loose)
    loose.chmod(0o644)
    code, out, err = await _cli(
        config, "secret", "--key-file", str(loose), "set", "hq.token", "--json",
        stdin=HQ_TOKEN.encode(),
    )  # fmt: skip
    assert code == 2
    assert json.loads(out)["error"]["code"] == "SECRETS_KEY_MODE"
    assert HQ_TOKEN not in out + err
    assert not (state_dir / SEALED_FILE).exists()

    code, _, err = await _cli(config, "secret", "init-key", str(state_dir / "key"))
    assert code == 2
    assert "SECRETS_KEY_IN_STATE_DIR" in err


async def test_cli_wrong_key_exits_1(
    state_dir: Path, key: SecretsKey, key_dir: Path, tmp_path: Path
) -> None:
    SecretStore(state_dir / SEALED_FILE, key).set("hq.token", HQ_TOKEN)
    config = write_config(tmp_path / "edge.toml", {"state_dir": str(state_dir)})
    other = key_dir / "other"
    generate_key_file(other)
    code, out, err = await _cli(
        config, "secret", "--key-file", str(other), "set", "netsuite.token_secret",
        stdin=TOKEN_SECRET.encode(),
    )  # fmt: skip
    assert code == 1
    assert "SECRETS_KEY_MISMATCH" in err
    assert TOKEN_SECRET not in out + err
    sealed = msgspec.json.decode((state_dir / SEALED_FILE).read_bytes())
    assert list(sealed["secrets"]) == ["hq.token"]
