"""The live page in headless Chromium against ``eventbus serve --demo``: agent activity,
presence, charts, a chat round trip with the demo agents, and a resume after the server
drops the connection. Leaves a screenshot in test-artifacts/."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from .server import ServerProcess, selected_modes

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.browser


@pytest.fixture
def browser_page() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Python playwright is missing: pip install playwright")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                     args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            problems: list[str] = []
            page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
            page.problems = problems  # type: ignore[attr-defined]
            yield page
        finally:
            browser.close()


def test_live_page_with_demo_agents(start_server: Callable[..., ServerProcess], browser_page: Any) -> None:
    page = browser_page
    server = start_server(selected_modes()[0], env={"EVENTBUS_DEMO_PACE": "0.5"},
                          command=[sys.executable, "-m", "eventbus", "serve", "--demo"])
    token = server.token("admin", ("admin", "publisher"))
    external: list[str] = []
    page.on("request", lambda req: req.url.startswith(server.url) or external.append(req.url))

    page.goto(f"{server.url}/#token={token}")
    page.wait_for_selector("#conn[data-state=connected]")
    assert "token=" not in page.url, "the token must not stay in the address bar"

    # Agent activity from the demo's signals.
    for event_type in ("agent_started", "agent_handoff", "tool_executed", "agent_completed"):
        page.wait_for_selector(f"#timeline li[data-type={event_type}]")
    page.wait_for_function("() => document.querySelectorAll('#agents .agent').length >= 3")
    page.wait_for_selector("#timeline li[data-type=tool_executed] .dur")
    # Health and performance charts, presence and the status poll.
    page.wait_for_selector("#health .row[data-component]")
    page.wait_for_selector("#perf .chart[data-metric=latency_ms] polyline[points]")
    page.wait_for_selector("#rooms tr[data-room=monitoring]")
    page.wait_for_function("() => document.querySelector('#chat-presence').textContent.includes('admin')")
    page.wait_for_function("() => Number(document.querySelector('#server [data-key=connections] b')?.textContent) >= 2")
    page.wait_for_selector("#rooms tr[data-room='session:demo']")

    # A chat round trip: the demo writer answers what we type, with a typing indicator first.
    page.evaluate("""() => {
        window.__sawTyping = false;
        new MutationObserver(() => {
            if (document.querySelector('#typing').textContent.includes('writer')) window.__sawTyping = true;
        }).observe(document.querySelector('#typing'), {childList: true, characterData: true, subtree: true});
    }""")
    question = "How many moons does Jupiter have according to the latest survey?"
    page.fill("#chat-input", question)
    page.press("#chat-input", "Enter")
    page.wait_for_selector(f"#messages li.mine:has-text('{question}')")
    reply = page.wait_for_selector("#messages li[data-type=chat_response]:has-text('Jupiter have according')",
                                   timeout=30_000)
    assert "writer" in reply.inner_text()
    assert page.evaluate("() => window.__sawTyping"), "no typing indicator from the writer before the reply"

    # The server drops our connections; the page reconnects, resumes and keeps receiving.
    response = requests.post(f"{server.url}/api/connections/disconnect", json={"user_id": "admin"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200 and response.json()["disconnected"], response.text
    page.wait_for_selector("#conn[data-state=resumed]", timeout=30_000)
    server.publish("alert_created", {"severity": "critical", "message": "browser-test alert after resume"})
    page.wait_for_selector("#alerts li:has-text('browser-test alert after resume')")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert external == [], f"the page fetched from elsewhere: {external}"
    assert page.problems == [], page.problems  # no CSP violation, script error or failed request


def test_sign_in_form_and_refusal(start_server: Callable[..., ServerProcess], browser_page: Any) -> None:
    page = browser_page
    server = start_server(selected_modes()[0])
    page.goto(f"{server.url}/")
    page.wait_for_selector("#signin:not([hidden])")
    page.fill("#token", server.token("mallory", (), ttl=-60))
    page.press("#token", "Enter")
    page.wait_for_selector("#signin-error:has-text('token_expired')")
    page.wait_for_selector("#conn[data-state=refused]")
    page.fill("#token", server.token("alice", ()))
    page.press("#token", "Enter")
    page.wait_for_selector("#conn[data-state=connected]")
    assert page.locator("#whoami").inner_text() == "alice"


def test_live_page_shows_a_type_a_plugin_registered(start_server: Callable[..., ServerProcess],
                                                    browser_page: Any) -> None:
    """The page takes its event types from the server: a plugin's own type, which the page's
    code does not name, appears in the activity timeline with the registry's description."""
    page = browser_page
    app = Path(__file__).parent / "apps" / "typed_app.py"
    server = start_server("threading", command=[sys.executable, str(app)])
    token = server.token("admin", ("admin", "publisher"))
    types = requests.get(f"{server.url}/api/event-types", headers={"Authorization": f"Bearer {token}"},
                         timeout=10).json()["types"]
    deploy = next(t for t in types if t["name"] == "deploy_finished")
    assert deploy["category"] == "ops" and deploy["namespace"] == "/monitoring"
    assert {"agent_started", "chat_message"} <= {t["name"] for t in types}
    assert requests.get(f"{server.url}/api/event-types", timeout=10).status_code == 401

    page.goto(f"{server.url}/eventbus/#token={token}")  # the page's path inside an app of your own
    page.wait_for_selector("#conn[data-state=connected]")
    server.publish("deploy_finished", {"service": "api", "version": "1.4.2"})
    row = page.wait_for_selector("#timeline li[data-type=deploy_finished]")
    assert "1.4.2" in row.inner_text()
    assert page.evaluate("() => document.querySelector('#timeline li[data-type=deploy_finished] span[title]')"
                         "?.getAttribute('title')") == "A deployment finished."
    assert page.problems == [], page.problems
