"""The console's login, session and CSRF middleware over real HTTP on loopback.

Each test runs an aiohttp app with :func:`setup_auth` and two tiny page handlers behind it,
served by aiohttp's TestServer on 127.0.0.1 and driven by a real ClientSession. The clock is
the test's own, so lockouts and session timeouts pass without sleeping.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edge.console.auth import Accounts
from edge.console.web_auth import ACCOUNT, COOKIE_NAME, CSRF, setup_auth

FAST_N = 2**4  # tests only: the production scrypt cost stays the default
PASSWORD = "alice-password-1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def whoami(request: web.Request) -> web.Response:
    """A console page: shows what the middleware put on the request."""
    return web.json_response({"account": request[ACCOUNT], "csrf": request[CSRF]})


async def do_action(request: web.Request) -> web.Response:
    """A console form target; reads the form again after the middleware has."""
    form = await request.post()
    return web.json_response({"done": True, "by": request[ACCOUNT], "value": form.get("v")})


async def open_endpoint(request: web.Request) -> web.Response:
    return web.json_response({"open": True})


@dataclass
class Console:
    server: TestServer
    http: aiohttp.ClientSession
    clock: FakeClock
    accounts: Accounts

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def login(
        self, name: str = "alice", password: str = PASSWORD, **extra: str
    ) -> aiohttp.ClientResponse:
        data = {"name": name, "password": password, **extra}
        async with self.http.post(self.url("/login"), data=data, allow_redirects=False) as resp:
            await resp.read()
            return resp

    async def whoami(self) -> dict[str, Any]:
        async with self.http.get(self.url("/whoami"), allow_redirects=False) as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body


@asynccontextmanager
async def running_console(
    tmp_path: Path, *, secure_cookies: bool = False
) -> AsyncIterator[Console]:
    accounts = Accounts.load(tmp_path / "accounts.json", n=FAST_N)
    accounts.add("alice", PASSWORD)
    clock = FakeClock()
    app = web.Application()
    setup_auth(app, accounts, secure_cookies=secure_cookies, clock=clock)
    app.router.add_get("/whoami", whoami)
    app.router.add_post("/action", do_action)
    app.router.add_get("/healthz", open_endpoint)
    app.router.add_route("*", "/api/thing", open_endpoint)
    app.router.add_get("/{page}", whoami)  # a catch-all page, as a console might have
    async with (
        TestServer(app, host="127.0.0.1") as server,
        # unsafe=True: the default jar refuses cookies from an IP address such as 127.0.0.1.
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        yield Console(server, http, clock, accounts)


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async with running_console(tmp_path) as running:
        yield running


def _set_cookie(resp: aiohttp.ClientResponse) -> Any:
    headers = resp.headers.getall("Set-Cookie", [])
    assert len(headers) == 1
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(headers[0])
    return cookie[COOKIE_NAME]


# --- login ----------------------------------------------------------------------------------


async def test_login_sets_a_session_cookie_scripts_and_other_sites_cannot_use(
    console: Console,
) -> None:
    resp = await console.login()
    assert resp.status == 303
    assert resp.headers["Location"] == "/"
    morsel = _set_cookie(resp)
    assert len(morsel.value) >= 43
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # plain HTTP in this test: a Secure cookie would never return
    assert (await console.whoami())["account"] == "alice"


async def test_cookie_is_secure_when_served_over_https(tmp_path: Path) -> None:
    async with running_console(tmp_path, secure_cookies=True) as console:
        morsel = _set_cookie(await console.login())
        assert morsel["secure"] is True
        assert morsel["httponly"] is True


async def test_login_page_is_a_form_with_the_next_path_escaped(console: Console) -> None:
    url = console.url("/login") + "?next=/lanes%3Fq%3D%22%3E%3Cscript%3E"
    async with console.http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        body = await resp.text()
    assert '<form method="post" action="/login">' in body
    assert 'name="password"' in body
    assert "<script>" not in body
    assert 'value="/lanes?q=&quot;&gt;&lt;script&gt;"' in body
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_wrong_password_and_unknown_name_get_the_same_generic_401(console: Console) -> None:
    """The answer must not tell an attacker which account names exist."""
    answers = []
    for name, password in [("alice", "wrong-password"), ("mallory", "wrong-password")]:
        async with console.http.post(
            console.url("/login"), data={"name": name, "password": password}
        ) as resp:
            assert resp.status == 401
            assert resp.headers.getall("Set-Cookie", []) == []
            answers.append((await resp.text()).replace(f'value="{name}"', 'value=""'))
    assert answers[0] == answers[1]
    assert "Wrong account name or password." in answers[0]


async def test_each_login_gets_a_new_session_id(console: Console) -> None:
    """A session id planted in the browser before login (session fixation) is worth nothing."""
    first = _set_cookie(await console.login()).value
    second = _set_cookie(await console.login()).value
    assert first != second
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        other.cookie_jar.update_cookies({COOKIE_NAME: first})
        async with other.get(console.url("/whoami"), allow_redirects=False) as resp:
            assert resp.status == 303


@pytest.mark.parametrize(
    ("next_path", "location"),
    [
        ("//evil.example", "/"),
        ("//evil.example/path", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        ("/lanes?status=open", "/lanes?status=open"),
    ],
)
async def test_login_redirects_only_to_local_paths(
    console: Console, next_path: str, location: str
) -> None:
    """An open redirect on the login page would lend the hub's name to a phishing link."""
    resp = await console.login(next=next_path)
    assert resp.status == 303
    assert resp.headers["Location"] == location


async def test_login_form_posted_from_another_site_is_refused(console: Console) -> None:
    """Login CSRF: another site must not log the technician's browser into its own account."""
    async with console.http.post(
        console.url("/login"),
        data={"name": "alice", "password": PASSWORD},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "CSRF_INVALID"
        assert resp.headers.getall("Set-Cookie", []) == []
    same_site = {"Origin": f"http://{console.server.host}:{console.server.port}"}
    async with console.http.post(
        console.url("/login"),
        data={"name": "alice", "password": PASSWORD},
        headers=same_site,
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303


# --- lockout --------------------------------------------------------------------------------


async def test_five_bad_passwords_lock_the_account_even_for_the_right_one(
    console: Console,
) -> None:
    for _ in range(5):
        assert (await console.login(password="not-the-password")).status == 401
    locked = await console.login()
    assert locked.status == 429
    assert locked.headers["Retry-After"] == "300"
    assert locked.headers.getall("Set-Cookie", []) == []

    console.clock.now += 299
    assert (await console.login()).status == 429
    console.clock.now += 1
    assert (await console.login()).status == 303


# --- the middleware -------------------------------------------------------------------------


async def test_page_redirects_to_login_when_logged_out_and_serves_when_logged_in(
    console: Console,
) -> None:
    async with console.http.get(console.url("/whoami?x=1"), allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/login?next=/whoami?x%3D1"
    async with console.http.get(console.url(resp.headers["Location"])) as form:
        assert 'name="next" value="/whoami?x=1"' in await form.text()

    login = await console.login(next="/whoami?x=1")
    assert login.headers["Location"] == "/whoami?x=1"
    async with console.http.get(console.url("/whoami?x=1"), allow_redirects=False) as resp:
        assert resp.status == 200
        assert (await resp.json())["account"] == "alice"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert resp.headers["Cache-Control"] == "no-store"


async def test_open_paths_pass_untouched(console: Console) -> None:
    """Health probes, metrics, assets and the register API do not go through console login."""
    for method, path in [("GET", "/healthz"), ("GET", "/api/thing"), ("POST", "/api/thing")]:
        async with console.http.request(method, console.url(path), allow_redirects=False) as resp:
            assert resp.status == 200, path
            assert "X-Frame-Options" not in resp.headers
            assert "Cache-Control" not in resp.headers


async def test_encoded_slash_does_not_sneak_a_page_past_login(console: Console) -> None:
    """ "/api%2F..%2Fpage" decodes to a path under /api/, yet the router may match it to a
    console page ("/{page}" here): the middleware must judge the raw path too."""
    url = console.server.make_url("/").with_path("/api%2F..%2Fsecret", encoded=True)
    async with console.http.get(url, allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/login?next=")


async def test_unsafe_request_needs_the_session_csrf_token(console: Console) -> None:
    await console.login()
    csrf = (await console.whoami())["csrf"]
    action = console.url("/action")

    for data, headers in [
        ({"v": "1"}, {}),
        ({"v": "1", "csrf": "wrong"}, {}),
        ({"v": "1"}, {"X-CSRF-Token": csrf[:-1]}),
    ]:
        async with console.http.post(action, data=data, headers=headers) as resp:
            assert resp.status == 403
            body = await resp.json()
            assert body["error"]["code"] == "CSRF_INVALID"
            assert body["error"]["message"]

    async with console.http.post(action, data={"v": "form", "csrf": csrf}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"done": True, "by": "alice", "value": "form"}
    async with console.http.post(action, data={"v": "hdr"}, headers={"X-CSRF-Token": csrf}) as resp:
        assert resp.status == 200
        assert (await resp.json())["value"] == "hdr"


async def test_unsafe_request_without_a_session_is_refused(console: Console) -> None:
    async with console.http.post(console.url("/action"), data={"csrf": "x"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "LOGIN_REQUIRED"
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    async with console.http.post(
        console.url("/action"), data={"csrf": "x"}, headers=browser, allow_redirects=False
    ) as resp:
        assert resp.status == 303  # a form posted after the session ended: back to login
        assert resp.headers["Location"] == "/login"
    async with console.http.post(console.url("/logout"), allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/login"


async def test_logout_ends_the_session(console: Console) -> None:
    old_id = _set_cookie(await console.login()).value
    csrf = (await console.whoami())["csrf"]
    async with console.http.post(console.url("/logout"), allow_redirects=False) as resp:
        assert resp.status == 403  # logging someone out is a form like any other
    async with console.http.post(
        console.url("/logout"), data={"csrf": csrf}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/login"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as replay:
        replay.cookie_jar.update_cookies({COOKIE_NAME: old_id})
        async with replay.get(console.url("/whoami"), allow_redirects=False) as resp:
            assert resp.status == 303


async def test_idle_session_is_sent_back_to_login(console: Console) -> None:
    await console.login()
    console.clock.now += 29 * 60
    await console.whoami()  # in use: the idle timer restarts
    console.clock.now += 29 * 60
    await console.whoami()
    console.clock.now += 30 * 60
    async with console.http.get(console.url("/whoami"), allow_redirects=False) as resp:
        assert resp.status == 303


# --- secrets at rest and in logs ------------------------------------------------------------


async def test_accounts_file_is_private_and_holds_no_password(console: Console) -> None:
    assert (await console.login()).status == 303
    path = console.accounts.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD not in path.read_text()


async def test_logs_never_hold_a_password_session_id_or_csrf_token(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await console.login(password="wrong-password-1")
    await console.login(name="typed-password-here", password="x")  # password in the name field
    session_id = _set_cookie(await console.login()).value
    csrf = (await console.whoami())["csrf"]
    async with console.http.post(console.url("/action"), data={"csrf": "wrong"}) as resp:
        assert resp.status == 403
    async with console.http.post(console.url("/logout"), data={"csrf": csrf}) as resp:
        assert resp.status == 200  # followed to the login form

    text = caplog.text
    assert "console login: alice" in text
    assert "console login failed for alice" in text
    for secret in [PASSWORD, "wrong-password-1", "typed-password-here", session_id, csrf]:
        assert secret not in text
