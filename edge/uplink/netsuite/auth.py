"""NetSuite authentication as pure functions: bytes and strings in, header values out.

Theory of operation
-------------------
NetSuite offers two machine logins (ref §5). This module builds both of them. It does no
I/O, draws no random numbers and never reads the clock. Callers pass in the nonce, the
timestamp or ``now``.

1. **TBA** (OAuth 1.0a, RFC 5849, HMAC-SHA256). This is the fallback. Every request is
   signed on its own:

   - The *signature base string* is ``METHOD & enc(base URI) & enc(normalised
     parameters)``.
   - The normalised parameters are the URL's query parameters, any form-encoded body
     parameters and the ``oauth_*`` protocol parameters. They are sorted, and ``realm``
     and ``oauth_signature`` are left out (RFC 5849 §3.4.1).
   - The signature is ``base64(HMAC-SHA256(enc(consumer_secret) & enc(token_secret),
     base string))``. It goes percent-encoded into the ``Authorization: OAuth ...``
     header, together with ``realm`` (the account id, upper case with an underscore).

   A JSON body is never signed (RFC 5849 §3.4.1.3.1 signs form bodies only). The
   functions below reproduce Oracle's published worked examples byte for byte; see
   tests/netsuite/test_auth.py.

2. **OAuth 2.0 client credentials (M2M)**. This is the preferred login.

   - The hub signs a short-lived JWT *client assertion* with the private key of the
     certificate mapped in NetSuite. The algorithm is PS256 or ES256, and ``kid`` is the
     certificate id (ref §5.2).
   - It POSTs the assertion as a form to ``/services/rest/auth/oauth2/v1/token``.
   - It gets back a bearer access token that is valid for 60 minutes.
   - ``TokenCache`` is the policy side of that exchange. It parses the reply, remembers
     the token and its expiry, and says when to fetch a new one: ``renew_before_s``
     ahead of expiry, so that requests never carry a token that is about to lapse.

Helpers. ``realm`` and ``account_host`` turn one account id into the two spellings that
NetSuite uses (``1234567_SB1`` in the realm, ``1234567-sb1`` in the host name).
``sanitize_external_id`` maps a register's transaction id onto NetSuite's external-id
alphabet. It does so without ever letting two transactions share an id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from edge.uplink.netsuite import (
    ConfigError,
    TokenRejectedError,
    TokenResponseError,
)

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "DEFAULT_ASSERTION_LIFETIME_S",
    "DEFAULT_RENEW_BEFORE_S",
    "DEFAULT_SCOPE",
    "EXTERNAL_ID_MAX_LENGTH",
    "MAX_ASSERTION_LIFETIME_S",
    "MAX_TOKEN_RESPONSE_BYTES",
    "TBA_SIGNATURE_METHOD",
    "TOKEN_LIFETIME_S",
    "AccessToken",
    "JwsAlgorithm",
    "TokenCache",
    "account_host",
    "build_client_assertion",
    "format_authorization_line",
    "parse_token_response",
    "percent_encode",
    "realm",
    "sanitize_external_id",
    "signature_base_string",
    "tba_authorization_header",
    "tba_signature",
    "tba_signature_base_string",
    "token_request_form",
]

# ---------------------------------------------------------------------------------------
# Account ids
# ---------------------------------------------------------------------------------------

# Account ids look like "1234567", "1234567_SB1" (sandbox) or "TSTDRV1234567". The UI shows
# an underscore and the host name uses a hyphen, so we accept either and normalise (ref §1.1).
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*")


def _checked_account_id(account_id: str) -> str:
    if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
        raise ConfigError(
            f"account id {account_id!r} is not a NetSuite account id "
            "(letters and digits, optionally '_SB1'-style suffixes)"
        )
    return account_id


def realm(account_id: str) -> str:
    """The OAuth realm of an account: upper case, with ``_`` (``1234567-sb1`` → ``1234567_SB1``).

    The realm must equal the account id exactly as NetSuite shows it. Otherwise the
    request fails with INVALID_LOGIN (ref §5.1).
    """
    return _checked_account_id(account_id).upper().replace("-", "_")


def account_host(account_id: str) -> str:
    """The DNS label of an account: lower case, with ``-`` (``1234567_SB1`` → ``1234567-sb1``).

    It forms ``<label>.suitetalk.api.netsuite.com`` and ``<label>.restlets.api.netsuite.com``.
    The code in jacobsvante/netsuite and Airbyte does the same (ref §1.1). Oracle advises
    reading the full domain from the account's Company URLs rather than building it, so
    the REST client should keep the base URL configurable and only default to this label.
    """
    return _checked_account_id(account_id).lower().replace("_", "-")


# ---------------------------------------------------------------------------------------
# TBA: OAuth 1.0a with HMAC-SHA256 (RFC 5849; ref §5.1)
# ---------------------------------------------------------------------------------------

TBA_SIGNATURE_METHOD: Final = "HMAC-SHA256"  # HMAC-SHA1 was retired in 2023.1 (ref §5.1)
_OAUTH_VERSION: Final = "1.0"

# RFC 5849 §3.6: only the RFC 3986 unreserved characters are left as they are. Everything
# else is %XX with upper-case hex, applied to the UTF-8 bytes.
_UNRESERVED: Final = "-._~"

ParamPairs = Mapping[str, str] | Sequence[tuple[str, str]]


def _encode_bytes(raw: bytes) -> str:
    return quote_from_bytes(raw, safe=_UNRESERVED)


def percent_encode(value: str) -> str:
    """Percent-encode ``value`` as RFC 5849 §3.6 requires (which is stricter than ``quote``).

    ``surrogatepass`` makes this total: any Python string can be encoded, and the
    simulator can verify whatever string a client sent.
    """
    return _encode_bytes(value.encode("utf-8", "surrogatepass"))


def _query_pairs(query: str) -> list[tuple[bytes, bytes]]:
    """Split a query into decoded (name, value) byte pairs, as RFC 5849 §3.4.1.3.1 requires.

    The query is parsed as application/x-www-form-urlencoded: ``+`` is a space, a name
    with no ``=`` has the empty value, and empty pieces are skipped. It is decoded to
    bytes, not text, so that a percent-escape that is not UTF-8 is re-encoded exactly
    as it arrived.
    """
    pairs: list[tuple[bytes, bytes]] = []
    for piece in query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        pairs.append(
            (
                unquote_to_bytes(name.replace("+", " ")),
                unquote_to_bytes(value.replace("+", " ")),
            )
        )
    return pairs


def _pair_list(params: ParamPairs | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    if isinstance(params, Mapping):
        return list(params.items())
    return list(params)


def _base_string_uri(url: str) -> tuple[str, str]:
    """Return the RFC 5849 §3.4.1.2 base string URI of ``url``, and its raw query.

    The scheme and host are lower-cased. The default port is dropped and any other port
    is kept. The path is kept exactly as sent, in its encoded form, and an empty path
    becomes "/". The fragment is dropped.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"cannot sign {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"cannot sign {url!r}: scheme must be http or https")
    host = parts.hostname
    if not host:
        raise ConfigError(f"cannot sign {url!r}: no host")
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would end up in logs and in the base string; refuse them.
        raise ConfigError(f"cannot sign {url!r}: user info in the URL is not supported")
    if ":" in host:  # IPv6 literal: urlsplit stripped the brackets the URI needs
        host = f"[{host}]"
    default_port = 80 if scheme == "http" else 443
    authority = host if port is None or port == default_port else f"{host}:{port}"
    return f"{scheme}://{authority}{parts.path or '/'}", parts.query


def _checked_method(method: str) -> str:
    upper = method.upper()
    if not upper.isascii() or not upper.isalpha():
        raise ConfigError(f"HTTP method {method!r} is not a method name")
    return upper  # RFC 5849 §3.4.1.1: the method in upper case


def signature_base_string(
    method: str,
    url: str,
    protocol_params: Mapping[str, str],
    body_params: ParamPairs | None = None,
) -> str:
    """Build the RFC 5849 §3.4.1 signature base string for any set of protocol parameters.

    This is the general form. The TBA helpers below call it, and so can a verifier such
    as the NetSuite simulator, which rebuilds the base string from a header it received.

    - ``protocol_params`` are the Authorization header's parameters. ``realm`` and
      ``oauth_signature`` are dropped if present.
    - ``body_params`` are the parameters of an ``application/x-www-form-urlencoded``
      body, already decoded. Pass nothing for JSON, because JSON bodies are not signed.
    - The URL's query parameters are always included. Names and values are
      percent-encoded, then sorted by name and then by value (§3.4.1.3.2).
    """
    base_uri, query = _base_string_uri(url)
    encoded: list[tuple[str, str]] = [
        (_encode_bytes(name), _encode_bytes(value)) for name, value in _query_pairs(query)
    ]
    encoded.extend(
        (percent_encode(name), percent_encode(value)) for name, value in _pair_list(body_params)
    )
    encoded.extend(
        (percent_encode(name), percent_encode(value))
        for name, value in protocol_params.items()
        if name != "realm"
    )
    # §3.4.1.3.1: oauth_signature is excluded wherever it appears.
    normalised = "&".join(
        f"{name}={value}" for name, value in sorted(encoded) if name != "oauth_signature"
    )
    return "&".join((_checked_method(method), percent_encode(base_uri), percent_encode(normalised)))


def _require_text(name: str, value: str) -> str:
    if not isinstance(value, str) or value == "":
        raise ConfigError(f"{name} must be a non-empty string")
    return value


def _tba_protocol_params(
    *, consumer_key: str, token: str, nonce: str, timestamp: int
) -> dict[str, str]:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ConfigError(f"oauth timestamp must be Unix seconds as an int, got {timestamp!r}")
    return {
        "oauth_consumer_key": _require_text("consumer_key", consumer_key),
        "oauth_nonce": _require_text("nonce", nonce),
        "oauth_signature_method": TBA_SIGNATURE_METHOD,
        "oauth_timestamp": str(timestamp),
        "oauth_token": _require_text("token", token),
        "oauth_version": _OAUTH_VERSION,
    }


def _refuse_oauth_names(url: str, body_params: ParamPairs | None) -> None:
    # Our protocol parameters travel in the header only. An oauth_* name that also
    # appeared in the query or body would be signed twice and would make the request
    # ambiguous (RFC 5849 §3.5 says to use one transmission method).
    _, query = _base_string_uri(url)
    names = [name.decode("utf-8", "replace") for name, _ in _query_pairs(query)]
    names += [name for name, _ in _pair_list(body_params)]
    clashing = sorted({n for n in names if n.startswith("oauth_")})
    if clashing:
        raise ConfigError(f"request parameters must not use OAuth names: {clashing}")


def tba_signature_base_string(
    method: str,
    url: str,
    *,
    consumer_key: str,
    token: str,
    nonce: str,
    timestamp: int,
    body_params: ParamPairs | None = None,
) -> str:
    """Build the exact base string that ``tba_authorization_header`` signs, for debugging.

    Compare it with the base string that NetSuite's Login Audit Trail or the simulator
    reports when a signature is refused.
    """
    _refuse_oauth_names(url, body_params)
    params = _tba_protocol_params(
        consumer_key=consumer_key, token=token, nonce=nonce, timestamp=timestamp
    )
    return signature_base_string(method, url, params, body_params)


def tba_signature(base_string: str, *, consumer_secret: str, token_secret: str) -> str:
    """Compute the HMAC-SHA256 signature of ``base_string``, base64-encoded but not yet
    percent-encoded.

    The key is ``enc(consumer_secret) & enc(token_secret)`` (RFC 5849 §3.4.2; ref §5.1).
    """
    key = "&".join(
        (
            percent_encode(_require_text("consumer_secret", consumer_secret)),
            percent_encode(_require_text("token_secret", token_secret)),
        )
    )
    digest = hmac.new(key.encode("ascii"), base_string.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def tba_authorization_header(
    method: str,
    url: str,
    *,
    account_id: str,
    consumer_key: str,
    consumer_secret: str,
    token: str,
    token_secret: str,
    nonce: str,
    timestamp: int,
    body_params: ParamPairs | None = None,
) -> str:
    """Build the value of the ``Authorization`` header for one TBA-signed request.

    The layout follows Oracle's "REST Web Services Header Example" (section_1534941295)
    exactly: ``realm`` first, then token, consumer key, nonce, timestamp, method, version
    and signature, joined by ``", "``. Every value is percent-encoded (RFC 5849 §3.5.1).
    The servers ignore the parameter order; we keep Oracle's so the golden test compares
    whole headers.

    Calling contract:

    - ``nonce`` must be fresh for each request. Oracle says a unique random alphanumeric
      string of 6–64 characters.
    - ``timestamp`` is the current Unix time in seconds.
    - ``body_params`` is only for form-encoded bodies. JSON bodies are not signed.
    """
    the_realm = realm(account_id)
    base = tba_signature_base_string(
        method,
        url,
        consumer_key=consumer_key,
        token=token,
        nonce=nonce,
        timestamp=timestamp,
        body_params=body_params,
    )
    signature = tba_signature(base, consumer_secret=consumer_secret, token_secret=token_secret)
    fields = (
        ("realm", the_realm),
        ("oauth_token", token),
        ("oauth_consumer_key", consumer_key),
        ("oauth_nonce", nonce),
        ("oauth_timestamp", str(timestamp)),
        ("oauth_signature_method", TBA_SIGNATURE_METHOD),
        ("oauth_version", _OAUTH_VERSION),
        ("oauth_signature", signature),
    )
    return "OAuth " + ", ".join(f'{name}="{percent_encode(value)}"' for name, value in fields)


def format_authorization_line(header_value: str) -> str:
    """Return ``Authorization: <value>`` on one line, for a technician's CLI to print or paste.

    A value that contains CR, LF or NUL is refused. Such a value would split the line or
    inject a header if someone pasted it into curl.
    """
    _require_text("header value", header_value)
    if any(ch in header_value for ch in "\r\n\0"):
        raise ConfigError("authorization header value must be a single line")
    return f"Authorization: {header_value}"


# ---------------------------------------------------------------------------------------
# OAuth 2.0 client credentials (M2M) (ref §5.2)
# ---------------------------------------------------------------------------------------

JwsAlgorithm = Literal["PS256", "ES256"]

CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_SCOPE: Final = ("restlets", "rest_webservices")

# The assertion is used once, at the token endpoint, so it should live only long enough to
# get there. Five minutes still absorbs a few minutes of hub clock lag. Oracle caps exp-iat
# at 60 minutes; its own sample assertion uses exactly 3600 s, so 3600 is allowed (ref §5.2).
DEFAULT_ASSERTION_LIFETIME_S: Final = 300
MAX_ASSERTION_LIFETIME_S: Final = 3600

# The certificate rules: RSA 3072 or 4096 bits, or EC P-256/384/521. NetSuite refuses to map
# anything else, so a wrong key is reported here, before any network traffic
# (ref §5.2, Oracle subsect_162755332391).
_RSA_KEY_SIZES: Final = frozenset({3072, 4096})
_PSS_SALT_LENGTH: Final = 32  # RFC 7518 §3.5: salt length equals the hash output (SHA-256)
_ES256_COORDINATE_BYTES: Final = 32  # RFC 7518 §3.4: R and S are each 32 bytes, big-endian


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_segment(obj: Mapping[str, object]) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def _jws_sign(
    algorithm: str, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, data: bytes
) -> bytes:
    if algorithm == "PS256":
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ConfigError("PS256 needs an RSA private key")
        if private_key.key_size not in _RSA_KEY_SIZES:
            raise ConfigError(
                f"NetSuite accepts RSA keys of 3072 or 4096 bits, got {private_key.key_size}"
            )
        return private_key.sign(
            data,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_PSS_SALT_LENGTH),
            hashes.SHA256(),
        )
    if algorithm == "ES256":
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, ec.SECP256R1
        ):
            raise ConfigError("ES256 needs an EC private key on curve P-256")
        # cryptography returns DER. JWS needs the raw R || S form (RFC 7518 §3.4).
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(_ES256_COORDINATE_BYTES, "big") + s.to_bytes(
            _ES256_COORDINATE_BYTES, "big"
        )
    raise ConfigError(f"unsupported JWS algorithm {algorithm!r}; use PS256 or ES256")


def build_client_assertion(
    *,
    client_id: str,
    certificate_id: str,
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    algorithm: JwsAlgorithm,
    token_url: str,
    now: float,
    lifetime_s: int = DEFAULT_ASSERTION_LIFETIME_S,
    scope: Sequence[str] = DEFAULT_SCOPE,
    scope_format: Literal["array", "string"] = "array",
    jti: str | None = None,
) -> str:
    """Sign the client assertion that is exchanged for an access token. Returns a compact
    JWS, ``header.payload.signature``.

    Header: ``{"typ":"JWT","alg":<algorithm>,"kid":<certificate_id>}``.
    Claims (Oracle section_162790605110):

    - ``iss``: the client id (the integration record's consumer key).
    - ``scope``: the requested scopes.
    - ``aud``: the token endpoint URL.
    - ``iat``: ``floor(now)``.
    - ``exp``: ``iat + lifetime_s``.

    On ``scope``: Oracle's prose says "separated by a comma", but both of Oracle's worked
    samples send a JSON array. The array is the default; ``scope_format="string"`` sends
    ``"restlets,rest_webservices"`` for an account that wants the prose form.

    Oracle does not list ``jti``. RFC 7523 §3 allows it, so it is sent only when given.
    Pass a fresh value per assertion if the account or a proxy asks for replay protection.
    """
    if not math.isfinite(now) or now < 0:
        raise ConfigError(f"now must be a finite Unix time, got {now!r}")
    if (
        isinstance(lifetime_s, bool)
        or not isinstance(lifetime_s, int)
        or not 0 < lifetime_s <= MAX_ASSERTION_LIFETIME_S
    ):
        raise ConfigError(
            f"assertion lifetime must be 1..{MAX_ASSERTION_LIFETIME_S} s, got {lifetime_s!r}"
        )
    scopes = list(scope)
    if not scopes or not all(isinstance(s, str) and s and "," not in s for s in scopes):
        raise ConfigError(f"scope must be one or more non-empty names, got {scope!r}")
    if scope_format not in ("array", "string"):
        raise ConfigError(f"scope_format must be 'array' or 'string', got {scope_format!r}")
    iat = math.floor(now)
    claims: dict[str, object] = {
        "iss": _require_text("client_id", client_id),
        "scope": scopes if scope_format == "array" else ",".join(scopes),
        "aud": _require_text("token_url", token_url),
        "iat": iat,
        "exp": iat + lifetime_s,
    }
    if jti is not None:
        claims["jti"] = _require_text("jti", jti)
    header = {
        "typ": "JWT",
        "alg": algorithm,
        "kid": _require_text("certificate_id", certificate_id),
    }
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
    signature = _jws_sign(algorithm, private_key, signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)}"


_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def token_request_form(assertion: str) -> dict[str, str]:
    """Return the form fields of the token request (Oracle section_162755359851).

    The caller form-encodes them as application/x-www-form-urlencoded (aiohttp does this
    for a dict ``data=``).
    """
    if not isinstance(assertion, str) or not _COMPACT_JWS.fullmatch(assertion):
        raise ConfigError("client assertion must be a compact JWS (three base64url parts)")
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
    }


# --- token endpoint reply and cache policy --------------------------------------------

# "The access token is valid for 60 minutes" (Oracle section_162755359851). That is used
# when a reply leaves out expires_in; the literal values of expires_in and token_type are
# UNCERTAIN (ref §5.2, §11), so both are read from the reply rather than assumed.
TOKEN_LIFETIME_S: Final = 3600
DEFAULT_RENEW_BEFORE_S: Final = 300.0  # renew at about 55 minutes (ref §5.2)
# A real reply is one JWT of about 1–2 KiB. Anything far larger is not a token response.
MAX_TOKEN_RESPONSE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token from the token endpoint, with its absolute expiry on the caller's clock."""

    access_token: str
    token_type: str
    expires_in: int
    expires_at: float

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value, ``Bearer <token>`` (Oracle section_157780312610)."""
        return f"Bearer {self.access_token}"


def _expires_in(raw: object) -> int:
    if raw is None:
        return TOKEN_LIFETIME_S
    # Some servers send the number as a string. Accept plain digits, but never a bool.
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise TokenResponseError(
            f"token response expires_in must be a positive number of seconds, got {raw!r}",
            retryable=False,
        )
    return raw


def parse_token_response(body: bytes | str, *, now: float) -> AccessToken:
    """Parse the token endpoint's JSON reply into an ``AccessToken`` that expires at
    ``now + expires_in``.

    ``now`` should be the time the request was *sent*, not the time the reply arrived.
    Then network delay makes the token look older than it is, never younger.

    - A reply with ``error`` raises ``TokenRejectedError`` (RFC 6749 §5.2).
    - A reply that is not JSON, or is too large, raises a retryable ``TokenResponseError``.
    - A well-formed reply that is unusable raises a non-retryable one. That covers no or
      an empty ``access_token``, a ``token_type`` other than Bearer, and a bad
      ``expires_in``.
    - A missing ``token_type`` is taken as Bearer, because the documented value is
      UNCERTAIN (ref §11). Token types are compared case-insensitively (RFC 6749 §5.1).
    """
    if not math.isfinite(now):
        raise ConfigError(f"now must be finite, got {now!r}")
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if len(raw) > MAX_TOKEN_RESPONSE_BYTES:
        raise TokenResponseError(
            f"token response is {len(raw)} bytes, over the {MAX_TOKEN_RESPONSE_BYTES} limit"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise TokenResponseError(f"token response is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise TokenResponseError("token response is not a JSON object", retryable=False)
    error = doc.get("error")
    if error is not None:
        description = doc.get("error_description")
        raise TokenRejectedError(str(error), description if isinstance(description, str) else "")
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenResponseError("token response has no access_token", retryable=False)
    if any(ch.isspace() for ch in access_token) or not access_token.isprintable():
        # It goes into a header line verbatim, so it must be one printable token.
        raise TokenResponseError(
            "token response access_token is not a header-safe token", retryable=False
        )
    token_type = doc.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenResponseError(
            f"token response token_type {token_type!r} is not Bearer", retryable=False
        )
    expires_in = _expires_in(doc.get("expires_in"))
    return AccessToken(
        access_token=access_token,
        token_type=token_type,
        expires_in=expires_in,
        expires_at=now + expires_in,
    )


class TokenCache:
    """The policy for when to fetch a new access token. It holds one token and does no I/O.

    Calling contract for the asyncio shell:

    1. Before each request, call ``needs_refresh(now)``. If it is true, POST a fresh
       assertion and pass the reply to ``accept(body, sent_at=...)``.
    2. If the refresh fails (WAN down), ``authorization(now)`` still returns the old token
       until it has actually expired. Renewing early is an optimisation, not a deadline.
    3. If a request gets 401, call ``invalidate()`` so the next request fetches a new token.

    The renewal time is ``expires_at - margin``, where ``margin = min(renew_before_s,
    lifetime / 2)``. If a server grants tokens shorter than the margin, each token is
    still used for half its life, instead of being refreshed on every request.
    """

    def __init__(self, *, renew_before_s: float = DEFAULT_RENEW_BEFORE_S) -> None:
        if not math.isfinite(renew_before_s) or renew_before_s < 0:
            raise ConfigError(f"renew_before_s must be >= 0, got {renew_before_s!r}")
        self._renew_before_s = renew_before_s
        self._token: AccessToken | None = None
        self._refresh_at = -math.inf

    @property
    def access_token(self) -> str | None:
        return None if self._token is None else self._token.access_token

    @property
    def expires_at(self) -> float | None:
        return None if self._token is None else self._token.expires_at

    @property
    def refresh_at(self) -> float | None:
        """When ``needs_refresh`` turns true, or None if no token is held."""
        return None if self._token is None else self._refresh_at

    def needs_refresh(self, now: float) -> bool:
        """Whether to fetch a new token now: none is held, or it is inside the margin."""
        return self._token is None or now >= self._refresh_at

    def usable(self, now: float) -> bool:
        """Whether a token is held and has not yet expired."""
        return self._token is not None and now < self._token.expires_at

    def authorization(self, now: float) -> str | None:
        """Return ``Bearer <token>`` while the token is usable, otherwise None."""
        if self._token is None or not self.usable(now):
            return None
        return self._token.authorization

    def accept(self, body: bytes | str, *, sent_at: float) -> AccessToken:
        """Parse a token endpoint reply and hold the token in it.

        Errors come from ``parse_token_response``. On an error the token already held is
        kept, so a bad reply does not throw away a token that still works.
        """
        token = parse_token_response(body, now=sent_at)
        margin = min(self._renew_before_s, token.expires_in / 2)
        self._token = token
        self._refresh_at = token.expires_at - margin
        return token

    def invalidate(self) -> None:
        """Drop the token, e.g. after a 401, so that the next call fetches a new one."""
        self._token = None
        self._refresh_at = -math.inf


# ---------------------------------------------------------------------------------------
# External ids (ref §0.2, §1.5)
# ---------------------------------------------------------------------------------------

# NetSuite documents no maximum length for an external id (ref §1.5 is silent: UNCERTAIN).
# 64 holds a store prefix plus a UUID with room to spare. Callers can change it.
EXTERNAL_ID_MAX_LENGTH: Final = 64

# "An external ID can be any string containing letters, numbers, underscore (_), and
# hyphen (-)" (Oracle section_156334828635). NetSuite also treats external ids
# case-insensitively ("the external ID attribute is case insensitive", Oracle
# section_N3432681). So "ABC" and "abc" would be the same record, and an upsert of one
# would overwrite the other. For that reason only lower-case ids pass through unchanged.
_PASS_THROUGH = re.compile(r"[a-z0-9_-]+")
_HASH_MARK: Final = "--"  # never appears in an id that passes through unchanged
_HASH_HEX_DIGITS: Final = 16  # 64 bits of SHA-256
_MIN_MAX_LENGTH: Final = len(_HASH_MARK) + _HASH_HEX_DIGITS + 2


def sanitize_external_id(txn_id: str, *, max_length: int = EXTERNAL_ID_MAX_LENGTH) -> str:
    """Map a transaction id to a NetSuite external id, deterministically and without
    collisions.

    - An id made only of ``a-z 0-9 _ -`` that contains no ``--`` and fits in
      ``max_length`` is returned unchanged.
    - Any other id becomes ``<readable>--<16 hex digits of SHA-256(id)>``. The readable
      part is the id lower-cased, with disallowed runs turned into ``_`` and cut to fit.

    Why no two different ids can map to the same external id, even comparing without
    case as NetSuite does:

    - Ids that pass through are distinct lower-case strings with no ``--``.
    - Every hashed id contains ``--``, so it cannot equal an id that passed through.
    - Two hashed ids are equal only if their 64-bit SHA-256 prefixes are equal.

    The mapping is part of the outbox's idempotency contract. If it changed between
    releases, a sale re-sent after an upgrade would be upserted as a second record.
    Treat it as frozen.
    """
    if not isinstance(txn_id, str) or txn_id == "":
        raise ConfigError("transaction id must be a non-empty string")
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise ConfigError(f"max_length must be an int, got {max_length!r}")
    if max_length < _MIN_MAX_LENGTH:
        raise ConfigError(f"max_length must be at least {_MIN_MAX_LENGTH}, got {max_length}")
    if len(txn_id) <= max_length and _HASH_MARK not in txn_id and _PASS_THROUGH.fullmatch(txn_id):
        return txn_id
    digest = hashlib.sha256(txn_id.encode("utf-8", "surrogatepass")).hexdigest()
    readable = re.sub(r"[^a-z0-9_-]+", "_", txn_id.lower())
    readable = re.sub(r"-{2,}", "-", readable)
    room = max_length - len(_HASH_MARK) - _HASH_HEX_DIGITS
    readable = readable[:room].rstrip("-")
    return f"{readable}{_HASH_MARK}{digest[:_HASH_HEX_DIGITS]}"
