"""The live page: served at ``/`` (or ``/eventbus/`` inside an existing app) with its bundle,
styles and licences, under a strict Content-Security-Policy, fetching nothing from elsewhere."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import eventbus_auth
import eventbus_socketio
from eventbus import Config, EventBus
from eventbus_socketio.dashboard import STATIC_DIR, STATIC_URL

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboard"
#: URL-looking strings in the bundle that are not fetched: the SVG namespace, and a link
#: to socket.io's migration guide inside one of its error messages.
NOT_FETCHED = {"http://www.w3.org/2000/svg", "https://", "https://socket.io/docs/v3/migrating-from-2-x-to-3-0/"}


@pytest.fixture
def make_bus(tmp_path: Path) -> Iterator[Callable[[], EventBus]]:
    buses: list[EventBus] = []

    def factory() -> EventBus:
        bus = EventBus(Config(secret_key="k" * 40, data_dir=str(tmp_path / "data")),
                       plugins=[eventbus_auth, eventbus_socketio], load_entrypoints=False)
        buses.append(bus)
        return bus

    yield factory
    for bus in buses:
        bus.close()


@pytest.fixture
def client(make_bus: Callable[[], EventBus]) -> Any:
    return eventbus_socketio.create_app(bus=make_bus()).test_client()


def test_page_is_served_with_a_strict_policy(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert f'src="{STATIC_URL}/dashboard.js"' in html
    assert f'href="{STATIC_URL}/dashboard.css"' in html
    assert "__STATIC__" not in html and "__ROOT__" not in html
    policy = response.headers["Content-Security-Policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "<script>" not in html, "inline scripts would need 'unsafe-inline'"


@pytest.mark.parametrize("name, mimetype, needle", [
    ("dashboard.js", "text/javascript", "io client disconnect"),  # socket.io-client is inside
    ("dashboard.css", "text/css", ".timeline"),
    ("THIRD_PARTY_LICENSES.txt", "text/plain", "socket.io-client 4.8.4 (MIT)"),
])
def test_assets_are_served(client: Any, name: str, mimetype: str, needle: str) -> None:
    response = client.get(f"{STATIC_URL}/{name}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert needle in response.get_data(as_text=True)
    response.close()


def test_licences_cover_every_bundled_package() -> None:
    licences = (STATIC_DIR / "THIRD_PARTY_LICENSES.txt").read_text()
    bundled = re.findall(r"^(\S+) (\d+\.\d+\.\d+) \(MIT\)$", licences, re.M)
    assert {name for name, _ in bundled} >= {"socket.io-client", "engine.io-client", "socket.io-parser",
                                             "engine.io-parser", "@socket.io/component-emitter"}
    assert licences.count("Permission is hereby granted") == len(bundled)


def test_nothing_is_fetched_from_another_origin() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    css = (STATIC_DIR / "dashboard.css").read_text()
    assert "url(" not in css and "@import" not in css
    bundle = (STATIC_DIR / "dashboard.js").read_text()
    found = set(re.findall(r"https?://[^\s\"'`)]*", bundle))
    assert found <= NOT_FETCHED, f"unexpected URLs in the bundle: {found - NOT_FETCHED}"


def test_existing_app_keeps_its_own_home_page(make_bus: Callable[[], EventBus]) -> None:
    app = Flask("myapp")

    @app.get("/")
    def home() -> str:
        return "my home"

    eventbus_socketio.SocketManager(app, bus=make_bus())
    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == "my home"
    page = client.get("/eventbus/")
    assert page.status_code == 200 and "dashboard.js" in page.get_data(as_text=True)


@pytest.mark.parametrize("setting, path, missing", [(False, None, "/eventbus/"), ("/ops/live", "/ops/live/", "/")])
def test_page_location_is_configurable(make_bus: Callable[[], EventBus], setting: Any, path: str | None,
                                       missing: str) -> None:
    app = Flask("myapp")
    app.config["EVENTBUS_DASHBOARD_URL"] = setting
    eventbus_socketio.SocketManager(app, bus=make_bus())
    client = app.test_client()
    assert client.get(missing).status_code == 404
    if path is not None:
        assert client.get(path).status_code == 200


@pytest.mark.node
def test_committed_bundle_matches_its_sources() -> None:
    """``npm run check`` rebuilds into a temporary directory and compares byte for byte."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (DASHBOARD / "node_modules" / "esbuild").is_dir():
        pytest.skip("dashboard/node_modules is missing: run `npm ci` in dashboard/")
    result = subprocess.run(["node", "build.mjs", "--check"], cwd=DASHBOARD, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
