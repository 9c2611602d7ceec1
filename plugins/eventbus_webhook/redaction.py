"""Webhook URLs and error texts made safe to show. An endpoint URL may carry credentials
(``https://user:pw@host/hook?api_key=...``), and ``requests`` copies the URL into its
exception messages; everything the plugin shows or logs (status, metrics, the CLI, log
lines, the outbox's ``last_error``) passes through :func:`scrub` or ``redact_url`` first."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from eventbus.redact import redact_url

REDACTED = "<redacted>"
#: Query values shorter than this are left alone in free text (``?v=1`` must not blank
#: every "1"); the query as a whole is always removed.
MIN_SECRET_LENGTH = 4
#: What ``requests`` leaves unescaped when it re-quotes a URL (``requote_uri``).
_REQUOTE_SAFE = "!#$%&'()*+,/:;=?@[]~"
_ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_PATH_QUERY = re.compile(r"(/[^\s'\"<>?#]*)[?#][^\s'\"<>]*")

__all__ = ["REDACTED", "ScrubFilter", "redact_url", "scrub", "secret_parts"]


def _variants(text: str) -> set[str]:
    return {text, unquote(text), quote(unquote(text), safe=_REQUOTE_SAFE)}


def secret_parts(url: str) -> list[str]:
    """The pieces of ``url`` that may be credentials (user, password, query, fragment, each
    query value), raw and percent-encoded, longest first."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return [url]
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    for piece in (userinfo, username, password, parts.query, parts.fragment):
        if piece:
            found |= _variants(piece)
    for _, value in parse_qsl(parts.query, keep_blank_values=True):
        if len(value) >= MIN_SECRET_LENGTH:
            found |= _variants(value)
    return sorted((p for p in found if p), key=len, reverse=True)


def scrub(text: str | None, url: str | None = None) -> str | None:
    """``text`` with no credential left: every URL in it reduced to
    ``scheme://host[:port]/path``, every path's query string and fragment removed, and
    (given the endpoint ``url``) every secret part of ``url`` replaced by ``<redacted>``."""
    if not text:
        return text
    if url:
        shown = redact_url(url)
        for whole in sorted(_variants(url), key=len, reverse=True):
            text = text.replace(whole, shown)
    text = _ANY_URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _PATH_QUERY.sub(r"\1", text)
    if url:
        for part in secret_parts(url):
            text = text.replace(part, REDACTED)
    return text


class ScrubFilter(logging.Filter):
    """Rewrites records of HTTP client loggers (``urllib3`` logs the request line with its
    query at DEBUG) so no endpoint credential reaches a log handler."""

    #: Loggers that print request URLs; a filter on a logger sees only its own records.
    LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")

    def __init__(self, urls: Iterable[str]):
        super().__init__()
        self.urls = list(urls)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned: str = message
        for url in self.urls:
            cleaned = scrub(cleaned, url) or cleaned
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True

    def install(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)

    def uninstall(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)
