"""NetSuite connector: authentication, posting the store's business (mapping, pre-flight
rules, idempotent upserts), the catalogue read, the daily journal and the reconciliation.

Facts and sources are in ``/work/shared/reference/netsuite.md`` (cited below as "ref §n").
Modules:

- ``auth``: pure signing and token policy, with no I/O and the clock passed in as ``now``.
  It builds the TBA (OAuth 1.0a, HMAC-SHA256) header, the OAuth 2.0 client-credentials
  assertion and token form, the token cache policy, account-id helpers and
  external-id sanitising.

Error tree (every error carries ``retryable``, which says whether trying again can help)::

    NetSuiteError                    base of everything this package raises
    ├── ConfigError                  local input is wrong (account id, URL, key, algorithm,
    │                                lifetime, transaction id); retryable=False
    └── AuthError                    credentials could not be obtained or were refused
        ├── TokenResponseError       the token endpoint's reply is not a usable token
        │                            response (not JSON, too big, fields missing or wrong)
        └── TokenRejectedError       the token endpoint refused the assertion with an
                                     RFC 6749 §5.2 error (``error``, ``description``)

How to extend it: the REST client adds its own branches next to ``AuthError`` (for example
a transport error that can be retried, and a rejection that carries NetSuite's ``nsError``
``o:errorCode``). A 401 ``INVALID_LOGIN`` from a REST call belongs under ``AuthError``.
Keep ``retryable`` correct on each new class.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "NetSuiteError",
    "TokenRejectedError",
    "TokenResponseError",
]


class NetSuiteError(Exception):
    """Base of the NetSuite connector's errors.

    ``retryable`` is a class default that a single instance can override, e.g. a token
    reply that was cut off can be retried, but a well-formed one of the wrong type cannot.
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(NetSuiteError):
    """Local input is invalid. Retrying with the same input cannot help."""

    retryable = False


class AuthError(NetSuiteError):
    """Authentication could not be obtained or was refused."""


class TokenResponseError(AuthError):
    """The token endpoint answered with something that is not a usable token response.

    It is retryable when the reply looks cut off or mangled in transit (not JSON, too
    large). It is not retryable when the JSON is well formed but wrong (e.g. a token
    type that is not ``Bearer``).
    """

    retryable = True


class TokenRejectedError(AuthError):
    """The token endpoint refused the client assertion (RFC 6749 §5.2 error response).

    ``error`` is the RFC 6749 code (``invalid_client``, ``invalid_grant``, ...).
    ``description`` is the server's ``error_description`` or "". This usually means the
    setup is wrong: certificate mapping, kid, clock or scope. Retrying alone will not fix it.
    """

    retryable = False

    def __init__(self, error: str, description: str = "") -> None:
        detail = f": {description}" if description else ""
        super().__init__(f"token endpoint rejected the client assertion ({error}){detail}")
        self.error = error
        self.description = description
