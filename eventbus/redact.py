"""Keep secrets and client-chosen text out of log lines and public responses.

``redact_url`` reduces any URL to ``scheme://host[:port]/path`` (no user, password, query or
fragment), so a Redis password or a webhook ``?api_key=`` never reaches a log or a status
body. ``clean`` escapes a client-supplied value for a log line, so a newline or a control
character cannot forge a second line.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

#: Longest client-supplied value written into a log line; the rest is cut.
LOG_VALUE_LIMIT = 200


def redact_url(url: Any) -> str:
    """``redis://:pw@host:6379/0?x=1`` -> ``redis://host:6379/0``. Anything that does not
    parse as a URL with a host becomes ``<redacted>``."""
    if url is None:
        return ""
    text = str(url)
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "<redacted>"
    if not parts.scheme or not host:
        return "<redacted>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def clean(value: Any, limit: int = LOG_VALUE_LIMIT) -> str:
    """A client-supplied value made safe for one log line: backslash escapes for
    newlines, control and non-ASCII characters, cut to ``limit`` characters, and quoted
    when it holds a space, ``=`` or ``"``."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    text = text[:limit]
    escaped = text.encode("unicode_escape").decode("ascii") + ("..." if cut else "")
    if not escaped or any(c in escaped for c in ' ="'):
        # Quoted, so a value cannot pose as further ``key=value`` fields of the line.
        escaped = '"' + escaped.replace('"', '\\"') + '"'
    return escaped
