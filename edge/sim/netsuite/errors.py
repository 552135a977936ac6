"""The two error shapes the simulated NetSuite answers with, as exceptions that carry the answer.

Theory of operation
-------------------
Every refusal inside the simulator is raised as one of these and turned into bytes by the
simulator's dispatcher, never by the code that detected it:

- REST services (record, SuiteQL, async jobs) answer in NetSuite's ``nsError`` shape
  (ref §3)::

      {"type": "<URI>", "title": "Bad Request", "status": 400,
       "o:errorDetails": [{"detail": "...", "o:errorCode": "INVALID_CONTENT",
                           "o:errorPath": "item.items[0].item"}]}

  with ``Content-Type: application/vnd.oracle.resource+json; type=error``. The ``type`` URIs
  are the RFC 2616 §10 anchors that Oracle's examples print; a client must not match on them
  (newer accounts send RFC 9110 URIs instead, ref §3).
- The OAuth 2.0 token endpoint answers in the RFC 6749 §5.2 shape
  ``{"error": "invalid_client", "error_description": "..."}``.

Error tree::

    SimulatorError              base; never escapes the aiohttp shell
    ├── NsError                 a REST answer in nsError shape: status, o:errorCode, detail and
    │                           the optional o:errorPath / o:errorHeader / o:errorQueryParam /
    │                           o:errorUrl pointers, plus extra response headers
    └── OAuthError              a token-endpoint answer (RFC 6749 §5.2): status, error,
                                error_description

Bad *configuration* of the simulator itself (a negative limit, an unknown custom-field kind) is a
plain ``ValueError`` raised at construction, as in :mod:`edge.sim.hq_api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "ERROR_CONTENT_TYPE",
    "INVALID_LOGIN_DETAIL",
    "NsError",
    "OAuthError",
    "SimulatorError",
    "invalid_content",
    "invalid_field_value",
    "invalid_login",
    "missing_value",
    "user_error",
]

ERROR_CONTENT_TYPE: Final = "application/vnd.oracle.resource+json; type=error"

# Oracle's examples (ref §3) use the RFC 2616 §10 anchors; the rest follow the same pattern.
_RFC2616: Final = "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"
_STATUS: Final[Mapping[int, tuple[str, str]]] = {
    400: ("Bad Request", f"{_RFC2616}#sec10.4.1"),
    401: ("Unauthorized", f"{_RFC2616}#sec10.4.2"),
    403: ("Forbidden", f"{_RFC2616}#sec10.4.4"),
    404: ("Not Found", f"{_RFC2616}#sec10.4.5"),
    405: ("Method Not Allowed", f"{_RFC2616}#sec10.4.6"),
    409: ("Conflict", f"{_RFC2616}#sec10.4.10"),
    413: ("Request Entity Too Large", f"{_RFC2616}#sec10.4.14"),
    415: ("Unsupported Media Type", f"{_RFC2616}#sec10.4.16"),
    # 429 is not in RFC 2616; RFC 6585 §4 defines it. The REST body for it is UNCERTAIN (ref §6).
    429: ("Too Many Requests", "https://tools.ietf.org/html/rfc6585#section-4"),
    500: ("Internal Server Error", f"{_RFC2616}#sec10.5.1"),
    502: ("Bad Gateway", f"{_RFC2616}#sec10.5.3"),
    503: ("Service Unavailable", f"{_RFC2616}#sec10.5.4"),
}

# The prefix NetSuite puts in front of record validation messages (ref §3 example).
_RESOURCE_PREFIX: Final = "Error while accessing resource: "

# Oracle's INVALID_LOGIN detail, verbatim (ref §3).
INVALID_LOGIN_DETAIL: Final = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
    "Setup > Users/Roles > User Management > View Login Audit Trail."
)


class SimulatorError(Exception):
    """Base of the answers the simulator refuses a request with."""


class NsError(SimulatorError):
    """A REST refusal in NetSuite's nsError shape (ref §3).

    ``path`` is ``o:errorPath`` (a JSON path into the request body), ``header`` is
    ``o:errorHeader``, ``query_param`` is ``o:errorQueryParam`` and ``url`` is ``o:errorUrl``.
    ``title`` and ``type_uri`` override the defaults of ``status`` (Oracle's idempotency
    conflict is a 400 titled "Conflict", ref §2.2). ``headers`` are sent with the answer.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        path: str | None = None,
        header: str | None = None,
        query_param: str | None = None,
        url: str | None = None,
        title: str | None = None,
        type_uri: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        default_title, default_type = _STATUS.get(status, ("Error", _RFC2616))
        self.status = status
        self.code = code
        self.detail = detail
        self.path = path
        self.header = header
        self.query_param = query_param
        self.url = url
        self.title = title or default_title
        self.type_uri = type_uri or default_type
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON document of the answer (ref §3 field names)."""
        detail: dict[str, Any] = {"detail": self.detail, "o:errorCode": self.code}
        for name, value in (
            ("o:errorPath", self.path),
            ("o:errorHeader", self.header),
            ("o:errorQueryParam", self.query_param),
            ("o:errorUrl", self.url),
        ):
            if value is not None:
                detail[name] = value
        return {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "o:errorDetails": [detail],
        }


class OAuthError(SimulatorError):
    """A token-endpoint refusal in the RFC 6749 §5.2 shape."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


# -- the refusals the record service uses, worded as NetSuite words them (ref §3) ---------------


def invalid_login() -> NsError:
    """401 INVALID_LOGIN, exactly as Oracle prints it (ref §3)."""
    return NsError(401, "INVALID_LOGIN", INVALID_LOGIN_DETAIL)


def invalid_field_value(value: object, field: str, path: str) -> NsError:
    """400 for a reference to something that does not exist (ref §3 second example)."""
    return NsError(
        400,
        "INVALID_CONTENT",
        f"{_RESOURCE_PREFIX}You have entered an Invalid Field Value {value} for the following "
        f"field: {field}",
        path=path,
    )


def invalid_content(detail: str, path: str | None = None) -> NsError:
    """400 INVALID_CONTENT: the body is not what the record accepts."""
    return NsError(400, "INVALID_CONTENT", _RESOURCE_PREFIX + detail, path=path)


def missing_value(label: str, path: str) -> NsError:
    """400 USER_ERROR for a missing mandatory field, in the UI's "Please enter value(s)" words.

    The exact REST code for a missing mandatory field is UNCERTAIN (ref §3 lists USER_ERROR among
    the codes seen in the wild); a client must not depend on it.
    """
    return NsError(
        400,
        "USER_ERROR",
        f"{_RESOURCE_PREFIX}Please enter value(s) for: {label}",
        path=path,
    )


def user_error(detail: str, path: str | None = None) -> NsError:
    """400 USER_ERROR with NetSuite's resource prefix."""
    return NsError(400, "USER_ERROR", _RESOURCE_PREFIX + detail, path=path)
