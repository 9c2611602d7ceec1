"""The live page: ``/`` on the stand-alone server, ``/eventbus/`` inside an existing app.

The page and its bundle (built from ``dashboard/`` with socket.io-client inside) ship in
``static/``, so it works offline and a pip install needs no npm. It is served with a
Content-Security-Policy that allows nothing but this origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, request

if TYPE_CHECKING:
    from .manager import SocketManager

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/_eventbus/static"
#: ``app.config`` key: where the page lives. ``None`` picks ``/`` for the stand-alone server
#: and ``/eventbus/`` in an existing app (whose ``/`` is its own); ``False`` turns it off.
URL_CONFIG_KEY = "EVENTBUS_DASHBOARD_URL"

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",  # fetch and the same-origin WebSocket
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def dashboard_url(app: Flask) -> str | None:
    """The page's path for ``app``, or ``None`` when it is turned off."""
    configured = app.config.get(URL_CONFIG_KEY)
    if configured is False:
        return None
    if configured:
        return "/" + str(configured).strip("/") + ("/" if str(configured).strip("/") else "")
    return "/" if app.import_name == "eventbus" else "/eventbus/"


def render_page(script_root: str = "") -> str:
    """The page's HTML with its asset and API paths filled in."""
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    root = script_root.rstrip("/")
    return html.replace("__STATIC__", root + STATIC_URL).replace("__ROOT__", root)


def register_dashboard(app: Flask, manager: SocketManager) -> None:
    url = dashboard_url(app)
    if url is None:
        return
    bp = Blueprint("eventbus_dashboard", __name__, static_folder=str(STATIC_DIR), static_url_path=STATIC_URL)

    @bp.get(url)
    def index() -> Response:
        response = Response(render_page(request.script_root), 200)
        response.headers.update(PAGE_HEADERS)
        return response

    @bp.after_request
    def harden(response: Response) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    app.register_blueprint(bp)
