"""``clients/js`` as the npm package ``eventbus-client``, used the way docs/clients.md says.

- ``npm pack`` ships the ES modules, their TypeScript declarations and the README, nothing else.
- Installed into a fresh project from the tarball, or from the folder as a copy
  (``install-links``), it imports in Node; a plain folder install is a symlink, which Node
  resolves only with ``--preserve-symlinks``.
- A new Vite + React app (the files ``npm create vite -- --template react`` makes, reduced to one
  component) installs it both ways, builds, and renders live events from a real server in
  headless Chromium through ``useEventBus`` and ``useEvents``.
- The React hooks pass their React Testing Library tests (tests/e2e/react, jsdom), also
  against a real server, and the ``.d.ts`` files type-check a typed use of every export.

Run ``npm ci`` in tests/e2e/react first: it pins the versions the fresh projects here install
(from npm's cache when they are there).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .server import ServerProcess, free_port, selected_modes
from .test_browser import ARTIFACTS, browser_page  # noqa: F401 - fixture: a headless Chromium page

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "js"
REACT_DIR = Path(__file__).parent / "react"
NODE = shutil.which("node")
NPM = shutil.which("npm")
SHIPPED = {"package.json", "README.md", "eventbus-client.js", "eventbus-client.d.ts", "react.js", "react.d.ts"}
CLIENT_EXPORTS = ["DEDUPE_WINDOW", "DEFAULT_ROOMS", "EventBusClient", "EventBusError", "STATES",
                  "createEventBusClient", "default"]
REACT_EXPORTS = ["EMPTY_STREAM", "STREAM_TYPES", "reduceStream", "useEventBus", "useEvents", "useStream"]

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not installed"),
]
needs_react_project = pytest.mark.skipif(
    not (REACT_DIR / "node_modules" / "vitest").is_dir(),
    reason="tests/e2e/react/node_modules is missing: run `npm ci` in tests/e2e/react")


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check``, fail the test with its output when it exits non-zero."""
    full_env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
                "npm_config_audit": "false", "NO_COLOR": "1", **(env or {})}
    result = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def npm_install(project: Path, *specs: str) -> None:
    """``npm install`` as a user would, preferring npm's cache to the registry."""
    run([NPM, "install", "--prefer-offline", "--loglevel=error", *specs], project)


def pinned(name: str) -> str:
    """``name@version`` as tests/e2e/react pins it (so npm ci there has cached it)."""
    meta = json.loads((REACT_DIR / "package.json").read_text())
    version = {**meta["dependencies"], **meta["devDependencies"]}[name]
    return f"{name}@{version}"


def new_project(path: Path, **fields: Any) -> Path:
    path.mkdir(parents=True)
    (path / "package.json").write_text(json.dumps({"name": path.name, "private": True, "type": "module", **fields},
                                                  indent=2))
    return path


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``npm pack /path/to/clients/js``, as the docs say, run in another directory."""
    out = tmp_path_factory.mktemp("packed")
    result = run([NPM, "pack", str(PACKAGE), "--json", "--loglevel=error"], out)
    (packed,) = json.loads(result.stdout)
    return out / packed["filename"]


def install_package(project: Path, route: str, tarball: Path) -> None:
    """The two documented ways: the ``npm pack`` tarball, or the folder with install-links."""
    if route == "tarball":
        npm_install(project, str(tarball))
    else:
        run([NPM, "config", "set", "install-links", "true", "--location=project"], project)
        npm_install(project, str(PACKAGE))
    installed = project / "node_modules" / "eventbus-client"
    assert installed.is_dir() and not installed.is_symlink(), f"{route}: eventbus-client is not a copy"


def test_npm_pack_ships_the_modules_and_their_declarations(tarball: Path) -> None:
    listing = run([NPM, "pack", str(PACKAGE), "--dry-run", "--json", "--loglevel=error"], tarball.parent)
    (packed,) = json.loads(listing.stdout)
    assert {f["path"] for f in packed["files"]} == SHIPPED
    meta = json.loads((PACKAGE / "package.json").read_text())
    assert meta["name"] == "eventbus-client" and meta["type"] == "module" and meta["sideEffects"] is False
    assert set(meta["files"]) | {"package.json"} == SHIPPED
    assert meta["exports"]["."] == {"types": "./eventbus-client.d.ts", "default": "./eventbus-client.js"}
    assert meta["exports"]["./react"] == {"types": "./react.d.ts", "default": "./react.js"}
    assert meta["peerDependencies"] == {"socket.io-client": "^4", "react": ">=18"}
    assert meta["peerDependenciesMeta"] == {"react": {"optional": True}}
    assert "scripts" not in meta, "installing from the folder or the tarball must run nothing"


IMPORT_CHECK = """
import * as client from "eventbus-client";
import * as hooks from "eventbus-client/react";
const bus = client.createEventBusClient({ url: "http://127.0.0.1:9", token: "t", autoConnect: false });
console.log(JSON.stringify({ client: Object.keys(client).sort(), hooks: Object.keys(hooks).sort(), state: bus.state }));
bus.close();
"""


@pytest.mark.parametrize("route", ["tarball", "folder"])
def test_a_fresh_node_project_installs_and_imports_it(tmp_path: Path, tarball: Path, route: str) -> None:
    project = new_project(tmp_path / "node-app")
    npm_install(project, pinned("socket.io-client"), pinned("react"))
    install_package(project, route, tarball)
    result = run([NODE, "--input-type=module", "-e", IMPORT_CHECK], project)
    assert json.loads(result.stdout) == {"client": sorted(CLIENT_EXPORTS), "hooks": sorted(REACT_EXPORTS),
                                         "state": "connecting"}
    # A teammate's `npm ci` gets the same: the lock (and .npmrc) keep the package a copy.
    shutil.rmtree(project / "node_modules")
    run([NPM, "ci", "--prefer-offline", "--loglevel=error"], project)
    assert not (project / "node_modules" / "eventbus-client").is_symlink()
    assert json.loads(run([NODE, "--input-type=module", "-e", IMPORT_CHECK], project).stdout)["state"] == "connecting"


def test_a_plain_folder_install_is_a_link_that_node_resolves_only_with_preserve_symlinks(tmp_path: Path) -> None:
    """Why the docs say install-links: npm links a folder, and Node looks for the link's
    imports (socket.io-client) next to its real path, the eventbus checkout."""
    project = new_project(tmp_path / "linked-app")
    npm_install(project, pinned("socket.io-client"), str(PACKAGE))
    assert (project / "node_modules" / "eventbus-client").is_symlink()
    plain = run([NODE, "--input-type=module", "-e", 'import "eventbus-client";'], project, check=False)
    assert plain.returncode != 0 and "ERR_MODULE_NOT_FOUND" in plain.stderr and "socket.io-client" in plain.stderr
    run([NODE, "--preserve-symlinks", "--input-type=module", "-e", 'import "eventbus-client";'], project)


APP_COMPONENT = """\
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { useEventBus, useEvents } from "eventbus-client/react";

const params = new URLSearchParams(location.hash.slice(1));

function Activity() {
  const { bus, state } = useEventBus({ url: params.get("url"), namespace: "/monitoring", token: params.get("token") });
  const events = useEvents(bus, ["agent_started", "agent_completed"], { limit: 5 });
  return (
    <main id="activity" data-state={state}>
      <ol>{events.map((e) => <li key={e.id} data-seq={e.seq}>{e.type} {e.data.agent_name}</li>)}</ol>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<StrictMode><Activity /></StrictMode>);
"""


def vite_react_app(path: Path) -> Path:
    """The files of Vite's React template, reduced to one component that uses the hooks."""
    project = new_project(path, scripts={"build": "vite build"})
    (project / "vite.config.js").write_text(
        'import react from "@vitejs/plugin-react";\nimport { defineConfig } from "vite";\n\n'
        "export default defineConfig({ plugins: [react()] });\n")
    (project / "index.html").write_text(
        '<!doctype html>\n<html lang="en">\n  <head><meta charset="UTF-8" /><link rel="icon" href="data:," /><title>eventbus app</title></head>\n'
        '  <body><div id="root"></div><script type="module" src="/src/main.jsx"></script></body>\n</html>\n')
    (project / "src").mkdir()
    (project / "src" / "main.jsx").write_text(APP_COMPONENT)
    npm_install(project, pinned("react"), pinned("react-dom"), pinned("socket.io-client"))
    npm_install(project, "-D", pinned("vite"), pinned("@vitejs/plugin-react"))
    return project


@pytest.fixture
def static_site() -> Iterator[Callable[[Path], str]]:
    """``serve(directory)`` serves a built app on a free port and returns its origin."""
    servers: list[ThreadingHTTPServer] = []

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the base class's name
            pass

    def serve(directory: Path) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), functools.partial(Quiet, directory=str(directory)))
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("route", ["folder", "tarball"])
def test_a_new_vite_react_app_builds_with_it(tmp_path: Path, tarball: Path, route: str) -> None:
    app = vite_react_app(tmp_path / "vite-app")
    install_package(app, route, tarball)
    run([NPM, "run", "build", "--silent"], app)
    bundle = "".join(p.read_text() for p in (app / "dist" / "assets").glob("*.js"))
    assert "useEvents: limit must be a positive integer" in bundle, "the hooks are in the bundle"
    assert "io client disconnect" in bundle, "socket.io-client is in the bundle"


@pytest.mark.browser
def test_the_vite_app_renders_live_events_in_chromium(tmp_path: Path, tarball: Path,
                                                      start_server: Callable[..., ServerProcess],
                                                      static_site: Callable[[Path], str],
                                                      browser_page: Any) -> None:  # browser_page: the fixture of test_browser.py
    app = vite_react_app(tmp_path / "vite-app")
    install_package(app, "folder", tarball)
    run([NPM, "run", "build", "--silent"], app)
    origin = static_site(app / "dist")
    server = start_server(selected_modes()[0], env={"WEBSOCKET_CORS_ORIGINS": origin})
    page = browser_page
    page.goto(f"{origin}/#url={server.url}&token={server.token('viewer', ())}")
    page.wait_for_selector("#activity[data-state=connected]", state="attached")
    for n in range(7):
        server.publish("agent_started" if n % 2 == 0 else "agent_completed", {"agent_name": f"agent-{n}"})
    server.publish("tool_executed", {"agent_name": "agent-6", "tool": "search"})
    page.wait_for_function("() => document.querySelector('#activity li:last-child')?.textContent"
                           " === 'agent_started agent-6'")
    items = page.eval_on_selector_all("#activity li", "els => els.map(e => [e.textContent, Number(e.dataset.seq)])")
    assert [text for text, _ in items] == ["agent_started agent-2", "agent_completed agent-3", "agent_started agent-4",
                                          "agent_completed agent-5", "agent_started agent-6"], "the last 5, in order"
    seqs = [seq for _, seq in items]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert not page.problems, page.problems  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "vite-react-app.png"))


@needs_react_project
def test_react_hooks_under_testing_library_and_the_declarations_type_check() -> None:
    vitest = run([str(REACT_DIR / "node_modules" / ".bin" / "vitest"), "run"], REACT_DIR)
    assert " passed" in vitest.stdout and "failed" not in vitest.stdout, vitest.stdout[-2000:]
    tsc = str(REACT_DIR / "node_modules" / ".bin" / "tsc")
    for config in ("tsconfig.json", "tsconfig.node.json"):  # as a bundler resolves it, and as Node does
        run([tsc, "--noEmit", "-p", config], REACT_DIR)


@needs_react_project
def test_react_hooks_against_a_real_server(start_server: Callable[..., ServerProcess]) -> None:
    """useEventBus + useEvents under StrictMode, and a chat message sent at mount that comes
    back to its sender, with useStream showing the agent's answer."""
    server = start_server(selected_modes()[0])
    env = {"EVENTBUS_URL": server.url, "EVENTBUS_TOKEN": server.token("react-user", ()),
           "EVENTBUS_PUBLISHER_TOKEN": server.token("react-agent", ("publisher",))}
    result = run([str(REACT_DIR / "node_modules" / ".bin" / "vitest"), "run", "src/live.test.jsx"], REACT_DIR, env=env)
    assert "2 passed" in result.stdout, result.stdout[-3000:]
