"""Both machine logins over real HTTP: TBA (OAuth 1.0a HMAC-SHA256, realm = account) checked by
recomputing the signature from the request as received, and OAuth 2.0 client credentials with a
JWT assertion whose bearer token lasts 60 minutes on the simulator's clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from edge.sim.netsuite.auth import OAuth2Client, base_string
from edge.sim.netsuite.errors import INVALID_LOGIN_DETAIL
from edge.sim.netsuite.server import NetSuiteServer, NetSuiteSim
from edge.uplink.netsuite.auth import build_client_assertion, token_request_form
from tests.sim.netsuite.helpers import ACCOUNT, Clock, Ns, Reply

SUITEQL = "/query/v1/suiteql"
QUERY = {"q": "SELECT id FROM item ORDER BY id"}
TRANSIENT = {"Prefer": "transient"}


def assert_invalid_login(reply: Reply) -> None:
    assert reply.status == 401
    assert reply.body == {
        "type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.2",
        "title": "Unauthorized",
        "status": 401,
        "o:errorDetails": [{"detail": INVALID_LOGIN_DETAIL, "o:errorCode": "INVALID_LOGIN"}],
    }


def test_base_string_matches_rfc_5849_worked_example() -> None:
    # RFC 5849 §3.4.1.1, with the form body's two parameters moved into the query (the
    # simulator signs JSON requests, whose bodies are not signed).
    url = "http://EXAMPLE.com:80/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b&c2&a3=2+q"
    params = {
        "realm": "Example",
        "oauth_consumer_key": "9djdj82h48djs9d2",
        "oauth_token": "kkk9d7dh3k39sjv7",
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": "137131201",
        "oauth_nonce": "7d8f3e4a",
        "oauth_signature": "ignored",
    }
    assert base_string("post", url, params) == (
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D"
        "%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce"
        "%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26"
        "oauth_token%3Dkkk9d7dh3k39sjv7"
    )


async def test_tba_signed_by_the_client_is_accepted(ns: Ns) -> None:
    reply = await ns.call("POST", SUITEQL, QUERY, params={"limit": "5"}, headers=TRANSIENT)
    assert reply.status == 200, reply.body
    assert reply.body["count"] == 5


async def test_tba_signed_by_hand_is_accepted(ns: Ns, server: NetSuiteServer) -> None:
    # Written out step by step, not with either implementation: a real check of both.
    timestamp = str(int(ns.clock()))
    uri = f"{server.rest_url}{SUITEQL}"
    normalised = (
        "limit=5&oauth_consumer_key=ck&oauth_nonce=handmade1&oauth_signature_method=HMAC-SHA256"
        f"&oauth_timestamp={timestamp}&oauth_token=tok&oauth_version=1.0&offset=0"
    )
    base = f"POST&{quote(uri, safe='')}&{quote(normalised, safe='')}"
    digest = hmac.new(b"cs&ts", base.encode(), hashlib.sha256).digest()
    signature = quote(base64.b64encode(digest).decode(), safe="")
    header = (
        f'OAuth realm="{ACCOUNT}", oauth_consumer_key="ck", oauth_token="tok", '
        f'oauth_nonce="handmade1", oauth_timestamp="{timestamp}", '
        f'oauth_signature_method="HMAC-SHA256", oauth_version="1.0", '
        f'oauth_signature="{signature}"'
    )
    reply = await ns.call(
        "POST",
        SUITEQL,
        QUERY,
        params={"offset": "0", "limit": "5"},
        headers=TRANSIENT,
        authorization=header,
    )
    assert reply.status == 200, ns.server.sim.auth.failures


async def test_wrong_secret_is_401_invalid_login(ns: Ns, sim: NetSuiteSim) -> None:
    url = ns.url(SUITEQL)
    header = ns.sign("POST", url, credential=ns.credential.__class__("ck", "WRONG", "tok", "ts"))
    reply = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=header)
    assert_invalid_login(reply)
    assert sim.auth.failures[-1].reason == "signature mismatch"


async def test_a_signature_for_another_url_is_refused(ns: Ns, sim: NetSuiteSim) -> None:
    header = ns.sign("POST", ns.url(SUITEQL, {"limit": "5"}))
    reply = await ns.call(
        "POST", SUITEQL, QUERY, params={"limit": "6"}, headers=TRANSIENT, authorization=header
    )
    assert_invalid_login(reply)
    assert sim.auth.failures[-1].reason == "signature mismatch"


async def test_replay_skew_realm_and_missing_header_are_refused(ns: Ns, sim: NetSuiteSim) -> None:
    header = ns.sign("POST", ns.url(SUITEQL))
    first = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=header)
    assert first.status == 200
    replay = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=header)
    assert_invalid_login(replay)
    assert "replayed" in sim.auth.failures[-1].reason

    stale = ns.sign("POST", ns.url(SUITEQL))
    ns.clock.now += 3600
    late = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=stale)
    assert_invalid_login(late)
    assert "away from the server clock" in sim.auth.failures[-1].reason

    other_realm = header.replace(f'realm="{ACCOUNT}"', 'realm="7654321"')
    wrong_realm = await ns.call(
        "POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=other_realm
    )
    assert_invalid_login(wrong_realm)
    assert "realm" in sim.auth.failures[-1].reason

    anonymous = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=None)
    assert_invalid_login(anonymous)


async def fetch_token(ns: Ns, assertion: str) -> Reply:
    url = f"{ns.server.rest_url}/auth/oauth2/v1/token"
    async with ns.session.post(url, data=token_request_form(assertion)) as response:
        return Reply(response.status, response.headers, await response.json())


async def test_oauth2_bearer_tokens_work_for_60_minutes(
    ns: Ns, sim: NetSuiteSim, clock: Clock
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sim.auth.oauth2["cert-1"] = OAuth2Client("client-1", "cert-1", key.public_key())
    token_url = f"{ns.server.rest_url}/auth/oauth2/v1/token"

    def assertion() -> str:
        return build_client_assertion(
            client_id="client-1",
            certificate_id="cert-1",
            private_key=key,
            algorithm="ES256",
            token_url=token_url,
            now=clock(),
        )

    token = await fetch_token(ns, assertion())
    assert token.status == 200, token.body
    assert token.body["token_type"] == "bearer"
    assert token.body["expires_in"] == 3600
    bearer = f"Bearer {token.body['access_token']}"
    ok = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=bearer)
    assert ok.status == 200
    clock.now += 3599
    still = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=bearer)
    assert still.status == 200
    clock.now += 1
    expired = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=bearer)
    assert_invalid_login(expired)
    assert sim.auth.failures[-1].reason == "the bearer token has expired"
    renewed = await fetch_token(ns, assertion())
    fresh = f"Bearer {renewed.body['access_token']}"
    again = await ns.call("POST", SUITEQL, QUERY, headers=TRANSIENT, authorization=fresh)
    assert again.status == 200


async def test_oauth2_ps256_is_accepted_and_a_foreign_key_refused(
    ns: Ns, sim: NetSuiteSim, clock: Clock
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    sim.auth.oauth2["cert-2"] = OAuth2Client("client-2", "cert-2", key.public_key())
    token_url = f"{ns.server.rest_url}/auth/oauth2/v1/token"

    def assertion(private_key: rsa.RSAPrivateKey, audience: str = token_url) -> str:
        return build_client_assertion(
            client_id="client-2",
            certificate_id="cert-2",
            private_key=private_key,
            algorithm="PS256",
            token_url=audience,
            now=clock(),
        )

    good = await fetch_token(ns, assertion(key))
    assert good.status == 200, good.body
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    forged = await fetch_token(ns, assertion(stranger))
    assert (forged.status, forged.body["error"]) == (400, "invalid_client")
    assert "signature" in sim.auth.failures[-1].reason
    refused = await fetch_token(ns, assertion(key, "https://elsewhere.example/token"))
    assert (refused.status, refused.body["error"]) == (400, "invalid_client")
    assert "aud" in sim.auth.failures[-1].reason


async def test_oauth2_rs256_is_refused(ns: Ns, sim: NetSuiteSim, clock: Clock) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sim.auth.oauth2["cert-3"] = OAuth2Client("client-3", "cert-3", key.public_key())

    def segment(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    now = int(clock())
    signing_input = (
        segment({"typ": "JWT", "alg": "RS256", "kid": "cert-3"})
        + "."
        + segment(
            {
                "iss": "client-3",
                "scope": ["rest_webservices"],
                "aud": f"{ns.server.rest_url}/auth/oauth2/v1/token",
                "iat": now,
                "exp": now + 600,
            }
        )
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    jws = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    reply = await fetch_token(ns, jws)
    assert (reply.status, reply.body["error"]) == (400, "invalid_client")
    assert "RS256" in reply.body["error_description"]
