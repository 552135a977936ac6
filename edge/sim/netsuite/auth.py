"""The server side of NetSuite's two machine logins: TBA checks and the OAuth 2.0 token endpoint.

Theory of operation
-------------------
:class:`Authenticator` is pure: the request's method, URL, ``Authorization`` header and ``now``
in, a verdict out. It *recomputes* from the request as received what the client should have
sent, with its own RFC 5849 code (:func:`base_string`), written apart from the client's signer in
:mod:`edge.uplink.netsuite.auth` so that a mistake in one is not silently shared by the other
(only the constants and the realm spelling are imported).

TBA (OAuth 1.0a, HMAC-SHA256; ref §5.1). ``Authorization: OAuth realm="...", oauth_...="..."``
is accepted when, in this order:

1. the header parses (every value quoted and percent-decoded, RFC 5849 §3.5.1);
2. ``realm`` equals the account id in NetSuite's spelling (``1234567_SB1``);
3. ``oauth_signature_method`` is ``HMAC-SHA256`` and ``oauth_version``, if present, is ``1.0``;
4. the consumer key and token are a registered :class:`TbaCredential`;
5. ``oauth_timestamp`` is within ``timestamp_skew_s`` of ``now`` (the real window is UNCERTAIN,
   ref §5.1; default 300 s, None to switch off);
6. the signature equals ``hmac_sha256(base_string(method, url, params), secrets)``;
7. the ``(consumer key, token, nonce, timestamp)`` has not been accepted before within the skew
   window (RFC 5849 §3.3); a replay is refused.

Any failure is 401 ``INVALID_LOGIN`` (ref §3), the same answer for every cause as NetSuite gives;
the cause is kept in :attr:`Authenticator.failures` (the simulator's "Login Audit Trail").

OAuth 2.0 client credentials (ref §5.2). ``POST /services/rest/auth/oauth2/v1/token`` with the
form ``grant_type=client_credentials``, ``client_assertion_type=urn:ietf:params:oauth:
client-assertion-type:jwt-bearer`` and ``client_assertion=<JWS>``. The assertion is accepted
when its header names ``alg`` PS256/384/512 or ES256/384/512 (RS256 is refused, ref §5.2) and a
``kid`` registered as an :class:`OAuth2Client`, its signature verifies with that client's public
key (RFC 7518 §3.4, §3.5), ``iss`` is the client id, ``aud`` is the token endpoint URL the
request was sent to, ``iat <= now + skew``, ``now < exp``, ``exp - iat <= 3600`` and ``scope``
(a JSON array or a comma/space separated string) includes ``rest_webservices``. The answer is
``{"access_token": ..., "token_type": "bearer", "expires_in": 3600}`` (literal values UNCERTAIN,
ref §11); refusals are RFC 6749 §5.2 bodies (``invalid_request``, ``unsupported_grant_type``,
``invalid_client``). A bearer token is accepted until ``expires_in`` has passed on the
simulator's clock; an expired or unknown one is 401 ``INVALID_LOGIN``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, unquote, unquote_to_bytes, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from edge.sim.netsuite.errors import NsError, OAuthError, invalid_login
from edge.uplink.netsuite.auth import (
    CLIENT_ASSERTION_TYPE,
    TBA_SIGNATURE_METHOD,
    realm,
)

__all__ = [
    "AuthFailure",
    "Authenticator",
    "Login",
    "OAuth2Client",
    "TbaCredential",
    "base_string",
    "hmac_sha256",
]

MAX_ASSERTION_LIFETIME_S: Final = 3600
_HEADER_PARAM: Final = re.compile(r'\s*([A-Za-z0-9_]+)\s*=\s*"([^"]*)"\s*(?:,|$)')
_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: Final[Mapping[str, tuple[type[ec.EllipticCurve], int]]] = {
    "ES256": (ec.SECP256R1, 32),
    "ES384": (ec.SECP384R1, 48),
    "ES512": (ec.SECP521R1, 66),
}


def _pct(raw: bytes) -> str:
    # RFC 5849 §3.6: everything but ALPHA / DIGIT / "-" / "." / "_" / "~" is %XX (upper case).
    return quote(raw, safe="-._~")


def base_string(method: str, url: str, oauth_params: Mapping[str, str]) -> str:
    """The RFC 5849 §3.4.1 signature base string of a request with a JSON (unsigned) body.

    ``url`` is the URL as received; its query parameters are decoded (``+`` is a space) and
    re-encoded; ``oauth_params`` are the header's decoded parameters (``realm`` and
    ``oauth_signature`` are left out here).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        host = f"{host}:{port}"
    uri = f"{scheme}://{host}{parts.path or '/'}"
    pairs: list[tuple[str, str]] = []
    for piece in parts.query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append(
                (
                    _pct(unquote_to_bytes(name.replace("+", " "))),
                    _pct(unquote_to_bytes(value.replace("+", " "))),
                )
            )
    for name, value in oauth_params.items():
        if name not in ("realm", "oauth_signature"):
            pairs.append((_pct(name.encode()), _pct(value.encode("utf-8", "surrogatepass"))))
    normalised = "&".join(f"{n}={v}" for n, v in sorted(pairs))
    return "&".join((method.upper(), _pct(uri.encode()), _pct(normalised.encode())))


def hmac_sha256(base: str, consumer_secret: str, token_secret: str) -> str:
    """RFC 5849 §3.4.2 with SHA-256: key ``cs&ts`` (each percent-encoded), base64 digest."""
    key = f"{_pct(consumer_secret.encode())}&{_pct(token_secret.encode())}"
    digest = hmac.new(key.encode(), base.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


@dataclass(frozen=True, slots=True)
class TbaCredential:
    """An integration record's consumer key/secret and an access token id/secret (ref §5.1)."""

    consumer_key: str
    consumer_secret: str
    token: str
    token_secret: str


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class OAuth2Client:
    """An M2M mapping: client id (the integration's consumer key), certificate id and the
    certificate's public key (ref §5.2)."""

    client_id: str
    certificate_id: str
    public_key: PublicKey


@dataclass(frozen=True, slots=True)
class Login:
    """Who an accepted request authenticated as."""

    scheme: Literal["tba", "oauth2", "none"]
    principal: str
    """The TBA token id, the OAuth 2.0 client id, or "" without authentication."""


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """One refused login, with the cause NetSuite would only show in its Login Audit Trail."""

    at: float
    scheme: str
    reason: str
    base_string: str | None = None


@dataclass(slots=True)
class _IssuedToken:
    client_id: str
    expires_at: float


def _b64url_decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


class Authenticator:
    """Checks TBA headers and bearer tokens, and serves the token endpoint. No I/O, no clock."""

    def __init__(
        self,
        account_id: str,
        *,
        tba: Iterable[TbaCredential] = (),
        oauth2: Iterable[OAuth2Client] = (),
        token_lifetime_s: int = 3600,
        timestamp_skew_s: float | None = 300.0,
        seed: int = 0,
        failure_history: int = 1000,
    ) -> None:
        self.account_id = account_id
        self.realm = realm(account_id)
        self.tba: dict[tuple[str, str], TbaCredential] = {(c.consumer_key, c.token): c for c in tba}
        self.oauth2: dict[str, OAuth2Client] = {c.certificate_id: c for c in oauth2}
        if token_lifetime_s < 1:
            raise ValueError("token_lifetime_s must be >= 1")
        self.token_lifetime_s = token_lifetime_s
        self.timestamp_skew_s = timestamp_skew_s
        self.failures: deque[AuthFailure] = deque(maxlen=failure_history)
        self._tokens: dict[str, _IssuedToken] = {}
        self._nonces: OrderedDict[tuple[str, str, str, str], int] = OrderedDict()
        self._rng = random.Random(seed)

    # -- REST requests -----------------------------------------------------------------------

    def check(self, method: str, url: str, authorization: str | None, now: float) -> Login:
        """Who sent the request, or raise 401 INVALID_LOGIN (the cause goes to ``failures``)."""
        if authorization is None or not authorization.strip():
            raise self._refuse(now, "none", "no Authorization header")
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self._check_bearer(rest.strip(), now)
        if scheme.lower() == "oauth":
            return self._check_tba(method, url, rest, now)
        raise self._refuse(now, scheme, f"unsupported Authorization scheme {scheme!r}")

    def _refuse(
        self, now: float, scheme: str, reason: str, base_string: str | None = None
    ) -> NsError:
        self.failures.append(AuthFailure(now, scheme, reason, base_string))
        return invalid_login()

    def _check_bearer(self, token: str, now: float) -> Login:
        issued = self._tokens.get(token)
        if issued is None:
            raise self._refuse(now, "oauth2", "unknown bearer token")
        if now >= issued.expires_at:
            raise self._refuse(now, "oauth2", "the bearer token has expired")
        return Login("oauth2", issued.client_id)

    def _check_tba(self, method: str, url: str, header: str, now: float) -> Login:
        params: dict[str, str] = {}
        position = 0
        while position < len(header):
            match = _HEADER_PARAM.match(header, position)
            if match is None or match.end() == position:
                raise self._refuse(now, "tba", f"malformed OAuth header at {position}")
            name = match.group(1)
            if name in params:
                raise self._refuse(now, "tba", f"parameter {name} appears twice")
            params[name] = unquote(match.group(2))
            position = match.end()
        if params.get("realm") != self.realm:
            raise self._refuse(
                now, "tba", f"realm {params.get('realm')!r} is not the account {self.realm!r}"
            )
        if params.get("oauth_signature_method") != TBA_SIGNATURE_METHOD:
            raise self._refuse(now, "tba", "oauth_signature_method must be HMAC-SHA256")
        if params.get("oauth_version", "1.0") != "1.0":
            raise self._refuse(now, "tba", "oauth_version must be 1.0")
        for required in ("oauth_consumer_key", "oauth_token", "oauth_nonce", "oauth_timestamp"):
            if not params.get(required):
                raise self._refuse(now, "tba", f"{required} is missing")
        unknown = sorted(k for k in params if k != "realm" and not k.startswith("oauth_"))
        if unknown:
            raise self._refuse(now, "tba", f"unknown OAuth header parameters {unknown}")
        credential = self.tba.get((params["oauth_consumer_key"], params["oauth_token"]))
        if credential is None:
            raise self._refuse(now, "tba", "unknown consumer key or token")
        timestamp_text = params["oauth_timestamp"]
        if not timestamp_text.isdigit():
            raise self._refuse(now, "tba", "oauth_timestamp is not Unix seconds")
        timestamp = int(timestamp_text)
        if self.timestamp_skew_s is not None and abs(now - timestamp) > self.timestamp_skew_s:
            raise self._refuse(
                now,
                "tba",
                f"oauth_timestamp {timestamp} is more than "
                f"{self.timestamp_skew_s:g} s away from the server clock {now:.0f}",
            )
        signature = params.get("oauth_signature", "")
        protocol = {k: v for k, v in params.items() if k not in ("realm", "oauth_signature")}
        try:
            base = base_string(method, url, protocol)
        except ValueError as exc:  # a bad port in the URL
            raise self._refuse(now, "tba", f"cannot rebuild the base string: {exc}") from None
        expected = hmac_sha256(base, credential.consumer_secret, credential.token_secret)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise self._refuse(now, "tba", "signature mismatch", base)
        nonce_key = (
            credential.consumer_key,
            credential.token,
            params["oauth_nonce"],
            timestamp_text,
        )
        self._forget_old_nonces(now)
        if nonce_key in self._nonces:
            raise self._refuse(now, "tba", "nonce and timestamp replayed")
        self._nonces[nonce_key] = timestamp
        return Login("tba", credential.token)

    def _forget_old_nonces(self, now: float) -> None:
        # A timestamp older than the skew window is refused anyway, so its nonce can go; without
        # a window, keep the last 100,000 (bounded memory).
        if self.timestamp_skew_s is None:
            while len(self._nonces) > 100_000:
                self._nonces.popitem(last=False)
            return
        # Oldest first, in arrival order (O(1) per request: a scan of every nonce cost the
        # posting bench a tenth of its event loop). One that arrived out of order stays a
        # little longer: harmless, its timestamp is refused anyway.
        horizon = now - self.timestamp_skew_s
        while self._nonces:
            key, timestamp = next(iter(self._nonces.items()))
            if timestamp >= horizon:
                break
            del self._nonces[key]

    # -- the token endpoint ------------------------------------------------------------------

    def token_request(
        self, content_type: str, body: bytes, token_url: str, now: float
    ) -> dict[str, Any]:
        """Serve one token request; the 200 body, or raise :class:`OAuthError`."""
        if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            raise OAuthError(
                "invalid_request", "the body must be application/x-www-form-urlencoded"
            )
        try:
            form = dict(
                parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=False)
            )
        except (UnicodeDecodeError, ValueError):
            raise OAuthError("invalid_request", "the form cannot be parsed") from None
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise OAuthError(
                "invalid_request", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
            )
        assertion = form.get("client_assertion")
        if not assertion:
            raise OAuthError("invalid_request", "client_assertion is missing")
        try:
            client = self._verify_assertion(assertion, token_url, now)
        except OAuthError as exc:
            self.failures.append(AuthFailure(now, "oauth2-token", exc.description))
            raise
        token = f"{self._rng.getrandbits(256):064x}"
        self._tokens = {k: v for k, v in self._tokens.items() if v.expires_at > now}
        self._tokens[token] = _IssuedToken(client.client_id, now + self.token_lifetime_s)
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.token_lifetime_s,
        }

    def _verify_assertion(self, assertion: str, token_url: str, now: float) -> OAuth2Client:
        def refuse(reason: str) -> OAuthError:
            return OAuthError("invalid_client", reason)

        parts = assertion.split(".")
        if len(parts) != 3:
            raise refuse("the client assertion is not a compact JWS")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, RecursionError):
            raise refuse("the client assertion is not base64url JSON") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise refuse("the JWS header and claims must be JSON objects")
        if header.get("typ", "JWT") != "JWT":
            raise refuse("typ must be JWT")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg[:2] not in ("PS", "ES") or alg[2:] not in _HASHES:
            raise refuse(f"alg {alg!r} is not allowed (PS256/384/512 or ES256/384/512)")
        client = self.oauth2.get(str(header.get("kid")))
        if client is None:
            raise refuse(f"kid {header.get('kid')!r} is not a mapped certificate")
        if not self._signature_ok(alg, client.public_key, f"{parts[0]}.{parts[1]}", signature):
            raise refuse("the client assertion signature does not verify")
        if claims.get("iss") != client.client_id:
            raise refuse("iss is not the client id of the certificate mapping")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if token_url not in audiences:
            raise refuse(f"aud must be the token endpoint {token_url}")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (iat, exp)):
            raise refuse("iat and exp must be numbers")
        assert isinstance(iat, int | float)
        assert isinstance(exp, int | float)
        skew = self.timestamp_skew_s or 0.0
        if iat > now + skew:
            raise refuse("iat is in the future")
        if now >= exp:
            raise refuse("the client assertion has expired")
        if exp - iat > MAX_ASSERTION_LIFETIME_S:
            raise refuse("exp is more than 60 minutes after iat")
        scope = claims.get("scope")
        scopes = (
            scope
            if isinstance(scope, list)
            else re.split(r"[,\s]+", scope)
            if isinstance(scope, str)
            else []
        )
        if "rest_webservices" not in scopes:
            raise refuse("scope must include rest_webservices")
        return client

    @staticmethod
    def _signature_ok(alg: str, key: PublicKey, signing_input: str, signature: bytes) -> bool:
        data = signing_input.encode("ascii")
        digest = _HASHES[alg[2:]]()
        try:
            if alg.startswith("PS"):
                if not isinstance(key, rsa.RSAPublicKey):
                    return False
                # RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash output.
                key.verify(
                    signature,
                    data,
                    padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
                    digest,
                )
                return True
            curve, size = _CURVES[alg]
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
                return False
            if len(signature) != 2 * size:
                return False  # RFC 7518 §3.4: R || S, fixed length; DER is not JWS
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))
            return True
        except InvalidSignature:
            return False

    # -- for tests -----------------------------------------------------------------------------

    def revoke_tokens(self) -> None:
        """Forget every issued bearer token (as a revoked mapping would)."""
        self._tokens.clear()
