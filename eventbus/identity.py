"""Who is connected: the identity that auth strategies return, and the error they raise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from .events import EventBusError


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    :param user_id: stable user id (the JWT ``sub``).
    :param roles: e.g. ``{"admin"}``, ``{"publisher"}``.
    :param claims: everything the strategy knew (JWT claims, validator output).
    :param strategy: which strategy recognised the credentials.
    """

    user_id: str
    roles: frozenset[str] = frozenset()
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    strategy: str = ""

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


class AuthError(EventBusError):
    """A refusal: ``unauthorized``, ``forbidden`` or ``token_expired``."""

    code = "unauthorized"


@dataclass(frozen=True)
class RequestContext:
    """What an auth strategy may look at, whatever the client transport: a Socket.IO
    connect, an HTTP API call, a stream request.

    :param transport: which client transport asks (``socketio``, ``http``, ...).
    :param headers: request headers, names in lower case.
    :param cookies: the request's cookies.
    :param query: query-string parameters (the first value of each).
    :param remote_addr: the client's address (after trusted-proxy handling).
    :param path: the request path.
    :param method: the HTTP method (``GET`` for a Socket.IO connect, whose handshake is one).
    :param environ: the WSGI environ, when the transport has one (else empty).
    """

    transport: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    remote_addr: str | None = None
    path: str = ""
    method: str = "GET"
    environ: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any], transport: str) -> RequestContext:
        """A context read from a WSGI ``environ``; headers, cookies and query parsed with the
        standard library (a malformed cookie header gives no cookies)."""
        headers = {key[5:].replace("_", "-").lower(): str(value)
                   for key, value in environ.items() if key.startswith("HTTP_")}
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = str(environ[key])
        cookies: dict[str, str] = {}
        try:
            jar = SimpleCookie()
            jar.load(headers.get("cookie", ""))
            cookies = {name: morsel.value for name, morsel in jar.items()}
        except CookieError:
            pass
        query: dict[str, str] = {}
        for name, value in parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True):
            query.setdefault(name, value)
        return cls(transport, headers, cookies, query, environ.get("REMOTE_ADDR"),
                   str(environ.get("PATH_INFO", "")), str(environ.get("REQUEST_METHOD", "GET")).upper(),
                   dict(environ))

    def header(self, name: str, default: str | None = None) -> str | None:
        """The header ``name`` (any case)."""
        return self.headers.get(name.lower(), default)

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header, if any."""
        scheme, _, value = (self.header("authorization") or "").partition(" ")
        return (value.strip() or None) if scheme.lower() == "bearer" else None
