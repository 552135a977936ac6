"""The console's login core: password hashes, the accounts file, lockout and sessions.

Time-dependent behaviour is driven by passing ``now``; nothing sleeps.
"""

from __future__ import annotations

import base64
import json
import logging
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.console.auth import (
    AccountExists,
    Accounts,
    AccountsFileError,
    InvalidAccountName,
    Locked,
    LoginGuard,
    SessionStore,
    UnknownAccount,
    WeakPassword,
    hash_password,
    verify_password,
)

FAST_N = 2**4  # tests only: the production cost stays the default

# --- hashing --------------------------------------------------------------------------------


def test_hash_is_self_describing_scrypt_with_production_cost() -> None:
    """A hash records its own cost and salt, so raising the cost later keeps old hashes valid."""
    encoded = hash_password("correct horse")
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt, validate=True)) == 16
    assert len(base64.b64decode(key, validate=True)) == 32
    assert verify_password("correct horse", encoded)


def test_wrong_password_does_not_verify() -> None:
    encoded = hash_password("correct horse", n=FAST_N)
    assert not verify_password("correct horsE", encoded)
    assert not verify_password("", encoded)


def test_same_password_hashes_differently() -> None:
    """A fresh salt per hash: equal passwords must not be visible as equal hashes."""
    assert hash_password("same password", n=FAST_N) != hash_password("same password", n=FAST_N)


@pytest.mark.parametrize("password", ["", "short", "7chars!"])
def test_empty_or_short_password_is_refused(password: str) -> None:
    with pytest.raises(WeakPassword, match="password"):
        hash_password(password)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "scrypt$16384$8$1$AAAA",
        "bcrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
        "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,  # n not a power of two
        "scrypt$1048576$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,  # 1 GiB of memory
        "scrypt$16384$8$99$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,  # minutes of work
        "scrypt$16384$8$1$not base64!$" + "A" * 44,
        "scrypt$016384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    ],
)
def test_malformed_or_hostile_hash_matches_nothing(encoded: str) -> None:
    """A damaged or tampered accounts file must neither crash a login nor exhaust the hub."""
    assert verify_password("any password", encoded) is False


_hash_fields = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["scrypt", "16", "8", "1", "AAAAAAAAAAAAAAAAAAAAAA==", "=", ""]),
)


@settings(max_examples=300, deadline=None)
@given(
    password=st.text(max_size=2000),
    encoded=st.one_of(st.text(), st.lists(_hash_fields, max_size=8).map("$".join)),
)
def test_verify_password_never_raises(password: str, encoded: str) -> None:
    """Whatever a client posts and whatever the file holds, a check answers True or False."""
    assert verify_password(password, encoded) in (True, False)


_VALID = hash_password("the right password", n=FAST_N)


@settings(max_examples=100, deadline=None)
@given(password=st.text())
def test_verify_password_against_a_real_hash_never_raises(password: str) -> None:
    """Lone surrogates, NULs and huge inputs included."""
    assert verify_password(password, _VALID) is (password == "the right password")


# --- accounts file --------------------------------------------------------------------------


def test_accounts_roundtrip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "accounts.json"
    accounts = Accounts.load(path, n=FAST_N)
    assert accounts.names() == []
    accounts.add("alice", "alice-password")
    accounts.add("bob", "bob-password", role="admin")

    again = Accounts.load(path, n=FAST_N)
    assert again.names() == ["alice", "bob"]
    assert again.role("bob") == "admin"
    assert again.verify("alice", "alice-password") is not None
    assert again.verify("alice", "bob-password") is None
    assert again.verify("nobody", "alice-password") is None


def test_accounts_file_is_0600_and_holds_no_plaintext(tmp_path: Path) -> None:
    """The file holds password hashes: only the hub's user may read it, and no password."""
    path = tmp_path / "accounts.json"
    accounts = Accounts.load(path, n=FAST_N)
    accounts.add("alice", "plaintext-secret-1")
    accounts.set_password("alice", "plaintext-secret-2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    body = path.read_text()
    assert "plaintext-secret" not in body
    assert json.loads(body)["accounts"]["alice"]["hash"].startswith("scrypt$")
    assert [p.name for p in tmp_path.iterdir()] == ["accounts.json"]  # no temp file left


def test_set_password_replaces_the_old_one(tmp_path: Path) -> None:
    accounts = Accounts.load(tmp_path / "a.json", n=FAST_N)
    accounts.add("alice", "first-password")
    accounts.set_password("alice", "second-password")
    assert accounts.verify("alice", "first-password") is None
    assert accounts.verify("alice", "second-password") is not None


def test_account_errors(tmp_path: Path) -> None:
    accounts = Accounts.load(tmp_path / "a.json", n=FAST_N)
    accounts.add("alice", "alice-password")
    with pytest.raises(AccountExists):
        accounts.add("alice", "another-password")
    with pytest.raises(UnknownAccount):
        accounts.set_password("bob", "bob-password")
    with pytest.raises(UnknownAccount):
        accounts.remove("bob")
    with pytest.raises(WeakPassword):
        accounts.add("bob", "short")
    with pytest.raises(WeakPassword):
        accounts.set_password("alice", "")
    with pytest.raises(InvalidAccountName):
        accounts.add("bob smith\n", "bob-password")
    with pytest.raises(ValueError, match="role"):
        accounts.add("bob", "bob-password", role="root")
    accounts.remove("alice")
    assert accounts.names() == []
    assert Accounts.load(tmp_path / "a.json").names() == []


def test_account_added_by_another_process_can_log_in(tmp_path: Path) -> None:
    """The CLI writes the file while the hub runs; the hub must not need a restart."""
    path = tmp_path / "a.json"
    hub = Accounts.load(path, n=FAST_N)
    Accounts.load(path, n=FAST_N).add("carol", "carol-password")
    assert hub.verify("carol", "carol-password") is not None


def test_corrupt_file_is_an_error_with_the_step(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("{not json")
    with pytest.raises(AccountsFileError) as info:
        Accounts.load(path)
    assert info.value.step == "parse"


def test_account_changes_log_names_never_passwords(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    accounts = Accounts.load(tmp_path / "a.json", n=FAST_N)
    accounts.add("alice", "very-secret-1")
    accounts.set_password("alice", "very-secret-2")
    accounts.verify("alice", "very-secret-3")
    assert "alice" in caplog.text
    assert "very-secret" not in caplog.text
    assert "scrypt$" not in caplog.text


# --- lockout --------------------------------------------------------------------------------


def test_account_locks_after_five_failures_and_unlocks_after_the_lockout() -> None:
    guard = LoginGuard(max_failures=5, window=900, lockout=300)
    for i in range(4):
        assert guard.check("alice", "10.0.0.1", now=100 + i) is None
        assert guard.failed("alice", "10.0.0.1", now=100 + i) is None
    assert guard.failed("alice", "10.0.0.1", now=104) == Locked(404, "account")
    lock = guard.check("alice", "10.0.0.2", now=105)  # another machine: same account lock
    assert lock == Locked(404, "account")
    assert lock.retry_after(105) == 299
    assert guard.check("alice", "10.0.0.1", now=403.5) is not None
    assert guard.check("alice", "10.0.0.1", now=404) is None
    # A fresh count after the lock: one more failure does not lock again at once.
    assert guard.failed("alice", "10.0.0.1", now=405) is None
    assert guard.check("alice", "10.0.0.1", now=405) is None
    assert guard.check("bob", "10.0.0.1", now=105) is None  # other names are unaffected


def test_failures_outside_the_window_do_not_count() -> None:
    guard = LoginGuard(max_failures=3, window=60, lockout=300)
    guard.failed("alice", "a", now=0)
    guard.failed("alice", "a", now=30)
    guard.failed("alice", "a", now=61)  # the one at 0 has left the window
    assert guard.check("alice", "a", now=61) is None
    guard.failed("alice", "a", now=62)
    assert guard.check("alice", "a", now=62) == Locked(362, "account")


def test_success_forgets_the_failures_of_that_name() -> None:
    guard = LoginGuard(max_failures=3)
    guard.failed("alice", "a", now=0)
    guard.failed("alice", "a", now=1)
    guard.succeeded("alice", "a", now=2)
    guard.failed("alice", "a", now=3)
    guard.failed("alice", "a", now=4)
    assert guard.check("alice", "a", now=5) is None


def test_one_address_guessing_many_names_is_locked() -> None:
    """Spraying one password over many names stays under each name's limit: the address
    limit catches it, and only that address."""
    guard = LoginGuard(max_failures=5, max_address_failures=10, lockout=300)
    for i in range(9):
        assert guard.failed(f"user{i}", "10.0.0.9", now=i) is None
    assert guard.failed("user9", "10.0.0.9", now=9) == Locked(309, "address")
    assert guard.check("alice", "10.0.0.9", now=10) == Locked(309, "address")
    assert guard.check("alice", "10.0.0.1", now=10) is None
    assert guard.check("alice", "10.0.0.9", now=309) is None


def test_guard_memory_is_bounded() -> None:
    guard = LoginGuard(max_tracked=100)
    for i in range(1000):
        guard.failed(f"user{i}", f"addr{i}", now=i)
    assert len(guard._names) == 100
    assert len(guard._addrs) == 100


# --- sessions -------------------------------------------------------------------------------


def test_session_create_and_get() -> None:
    store = SessionStore()
    session_id, csrf = store.create("alice", now=0)
    assert len(session_id) >= 43
    assert len(csrf) >= 43
    assert session_id != csrf
    session = store.get(session_id, now=1)
    assert session is not None
    assert session.name == "alice"
    assert session.csrf_matches(csrf)
    assert not session.csrf_matches("")
    assert not session.csrf_matches(None)
    assert not session.csrf_matches(csrf[:-1])
    assert store.get("not-a-session", now=1) is None


def test_each_session_has_its_own_csrf_token() -> None:
    store = SessionStore()
    a_id, a_csrf = store.create("alice", now=0)
    _, b_csrf = store.create("alice", now=0)
    assert a_csrf != b_csrf
    session = store.get(a_id, now=0)
    assert session is not None
    assert not session.csrf_matches(b_csrf)


def test_session_expires_when_idle_and_use_keeps_it_alive() -> None:
    store = SessionStore(idle_timeout=1800, max_lifetime=12 * 3600)
    used, _ = store.create("alice", now=0)
    idle, _ = store.create("bob", now=0)
    assert store.get(used, now=1799) is not None
    assert store.get(used, now=3000) is not None  # 1201 s after its last use
    assert store.get(idle, now=1800) is None
    assert store.get(idle, now=0) is None  # dropped, not merely hidden


def test_session_ends_at_its_absolute_lifetime_however_busy() -> None:
    store = SessionStore(idle_timeout=1800, max_lifetime=12 * 3600)
    session_id, _ = store.create("alice", now=0)
    now = 0.0
    while now < 12 * 3600 - 1000:
        now += 1000
        assert store.get(session_id, now=now) is not None
    assert store.get(session_id, now=12 * 3600) is None


def test_revoke_and_revoke_all() -> None:
    store = SessionStore()
    a1, _ = store.create("alice", now=0)
    a2, _ = store.create("alice", now=0)
    b1, _ = store.create("bob", now=0)
    assert store.revoke(a1)
    assert not store.revoke(a1)
    assert store.get(a1, now=1) is None
    assert store.get(a2, now=1) is not None
    assert store.revoke_all("alice") == 1
    assert store.get(a2, now=1) is None
    assert store.get(b1, now=1) is not None


def test_session_count_is_bounded() -> None:
    store = SessionStore(max_sessions=10)
    first, _ = store.create("alice", now=0)
    for _ in range(20):
        store.create("alice", now=1)
    assert len(store) == 10
    assert store.get(first, now=2) is None
