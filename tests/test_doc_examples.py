"""Every ```python and ```js example in README.md and docs/*.md runs, so examples cannot rot.

Python examples run in a subprocess (as a module named ``example``: an ``if __name__ ==
"__main__":`` block, where an example would start a server of its own, is left out); JS
examples run with ``node`` as ES modules, with the npm packages of tests/e2e/js. Each must
exit with status 0 within its timeout and print no traceback.

A hidden comment right before a fence says what an example needs, items separated by ``;``::

    <!-- example: needs server; vars: token; listens; publish: agent_started -->

- ``needs server``: a real ``eventbus serve`` runs (one for the whole module); the example's
  ``http://localhost:5050`` and ``http://127.0.0.1:5050`` point at it, and its environment
  has ``EVENTBUS_URL``, ``EVENTBUS_TOKEN`` (roles admin, publisher and agent) and the
  server's ``EVENTBUS_SECRET_KEY``.
- ``vars: NAME, ...``: names the example leaves to its reader, defined before it runs:
  ``token`` (that token), ``getToken`` (JS: an async function returning it), ``app`` (Python:
  a Flask app); any other name is a function that accepts anything and returns nothing.
- ``listens``: the example keeps running; it passes once it prints a line, and is then
  stopped. Meanwhile the event types of ``publish: TYPE, ...`` are published to the server
  again and again, with the data of their examples in docs/events.md.
- ``continues``: the example is the next part of the file's example before it (a tutorial
  that builds one module); they run together.
- ``skip: REASON`` (a fragment that cannot run) and ``pending: REASON`` (waits for a
  feature): not run; the reason is the skip message.

Every example also gets a fresh ``EVENTBUS_DATA_DIR``, a valid ``EVENTBUS_WEBHOOK_SECRET``
and ``examples/eventbus_deploys`` (the plugin of docs/plugins.md) on ``PYTHONPATH``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
JS_MODULES = ROOT / "tests" / "e2e" / "js" / "node_modules"
FENCE = re.compile(r"^```(python|js)\s*$")
MARKER = re.compile(r"^<!--\s*example:\s*(.*?)\s*-->\s*$")
KEYS = {"needs server", "vars", "listens", "publish", "continues", "skip", "pending"}
DEFAULT_URLS = ("http://localhost:5050", "http://127.0.0.1:5050")
TIMEOUT = {"python": 60.0, "js": 30.0}
LISTEN_TIMEOUT = 20.0


@dataclass
class Example:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    options: dict[str, str] = field(default_factory=dict)
    previous: Example | None = None  # the file's example before this one, same language

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def names(self) -> list[str]:
        return [n.strip() for n in self.options.get("vars", "").split(",") if n.strip()]

    @property
    def published(self) -> list[str]:
        return [n.strip() for n in self.options.get("publish", "").split(",") if n.strip()]

    def source(self) -> str:
        """The code to run: with ``continues``, the parts before it first."""
        if "continues" in self.options and self.previous is not None:
            return self.previous.source() + "\n\n" + self.code
        return self.code


def parse_options(text: str) -> dict[str, str]:
    options = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, _, value = item.partition(":")
        options[key.strip()] = value.strip()
    return options


def collect(path: Path) -> list[Example]:
    """The ```python and ```js examples of one Markdown file, with their markers."""
    lines = path.read_text().splitlines()
    found: list[Example] = []
    last: dict[str, Example] = {}
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        marker = MARKER.match(lines[index - 1]) if index else None
        lang = fence.group(1)
        example = Example(path, index + 1, lang, "\n".join(lines[index + 1:end]) + "\n",
                          parse_options(marker.group(1)) if marker else {}, last.get(lang))
        found.append(example)
        last[lang] = example
        index = end + 1
    return found


EXAMPLES = [example for path in DOCS for example in collect(path)]


def test_examples_are_found_and_their_markers_are_known() -> None:
    assert len({e.lang for e in EXAMPLES}) == 2 and len(EXAMPLES) >= 20
    for example in EXAMPLES:
        unknown = set(example.options) - KEYS
        assert not unknown, f"{example.name}: unknown marker items {sorted(unknown)} (known: {sorted(KEYS)})"
        for key in ("skip", "pending"):
            assert key not in example.options or example.options[key], f"{example.name}: {key} needs a reason"
        assert "publish" not in example.options or "listens" in example.options, example.name
        assert "continues" not in example.options or example.previous is not None, example.name


# -- what an example runs against ---------------------------------------------------------

@pytest.fixture(scope="module")
def doc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from .e2e.server import ServerProcess

    server = ServerProcess(tmp_path_factory.mktemp("doc-server"), "threading")
    server.start()
    yield server
    server.stop()


def event_data(event_type: str) -> dict[str, Any]:
    """The ``data`` of ``event_type``'s example in docs/events.md."""
    text = (ROOT / "docs" / "events.md").read_text()
    section = re.search(rf"^## `{re.escape(event_type)}`\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, f"docs/events.md has no section for {event_type}"
    return json.loads(re.search(r"```json\n(.*?)\n```", section.group(1), re.S).group(1))["data"]


def preamble(example: Example, token: str) -> str:
    """Definitions of the names the example leaves to its reader (``vars:``)."""
    out = []
    for name in example.names:
        if example.lang == "python":
            if name == "token":
                out.append(f"token = {token!r}")
            elif name == "app":
                out.append("from flask import Flask as _Flask\napp = _Flask('example')")
            else:
                out.append(f"def {name}(*args, **kwargs):\n    return None")
        else:
            if name == "token":
                out.append(f"const token = {json.dumps(token)};")
            elif name == "getToken":
                out.append(f"const getToken = async () => {json.dumps(token)};")
            else:
                out.append(f"const {name} = () => undefined;")
    return "\n".join(out) + ("\n" if out else "")


def environment(example: Example, workdir: Path, server: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "WEBSOCKET_"))}
    env.update(EVENTBUS_DATA_DIR=str(workdir / "data"), PYTHONUNBUFFERED="1",
               EVENTBUS_WEBHOOK_SECRET="whsec_" + base64.b64encode(os.urandom(24)).decode(),
               NODE_PATH=str(JS_MODULES),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "examples" / "eventbus_deploys"),
                                                        os.environ.get("PYTHONPATH")])))
    if server is not None:
        env.update(EVENTBUS_URL=server.url, EVENTBUS_SECRET_KEY=server.env["EVENTBUS_SECRET_KEY"],
                   EVENTBUS_TOKEN=server.token("docs", ("admin", "publisher", "agent")))
    else:
        env.update(EVENTBUS_SECRET_KEY=secrets.token_urlsafe(48))
    return env


def command(example: Example, workdir: Path, server: Any, token: str) -> list[str]:
    """Write the example to ``workdir`` and return the command that runs it."""
    code = example.source()
    if server is not None:
        for url in DEFAULT_URLS:
            code = code.replace(url, server.url)
    code = preamble(example, token) + code
    if example.lang == "python":
        script = workdir / "example.py"
        script.write_text(code)
        return [sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1], run_name='example')",
                str(script)]
    if shutil.which("node") is None or not (JS_MODULES / "socket.io-client").is_dir():
        pytest.skip("needs node and the npm packages of tests/e2e/js (npm ci there)")
    (workdir / "node_modules").symlink_to(JS_MODULES, target_is_directory=True)
    script = workdir / "example.mjs"
    script.write_text(code)
    # --preserve-symlinks: eventbus-client (a link to clients/js) finds socket.io-client here.
    return ["node", "--preserve-symlinks", str(script)]


def run_to_the_end(example: Example, argv: list[str], env: dict[str, str], workdir: Path) -> None:
    done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True,
                          timeout=TIMEOUT[example.lang])
    report = f"{example.name} (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    assert "Traceback" not in done.stderr, report


def run_until_it_prints(example: Example, argv: list[str], env: dict[str, str], workdir: Path,
                        server: Any) -> None:
    proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out: list[str] = []
    err: list[str] = []
    printed = threading.Event()

    def read(stream: Any, into: list[str], signal: threading.Event | None) -> None:
        for line in stream:
            into.append(line)
            if signal is not None:
                signal.set()

    readers = [threading.Thread(target=read, args=(proc.stdout, out, printed), daemon=True),
               threading.Thread(target=read, args=(proc.stderr, err, None), daemon=True)]
    for reader in readers:
        reader.start()
    data = {event_type: event_data(event_type) for event_type in example.published}
    try:
        attempts = int(LISTEN_TIMEOUT / 0.25)
        for _ in range(attempts):
            if printed.is_set() or proc.poll() is not None:
                break
            for event_type, payload in data.items():
                server.publish(event_type, payload)
            printed.wait(0.25)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for reader in readers:
            reader.join(10)
        proc.stdout.close()
        proc.stderr.close()
    report = f"{example.name}:\nstdout:\n{''.join(out)[-2000:]}\nstderr:\n{''.join(err)[-4000:]}"
    assert out, f"printed nothing within {LISTEN_TIMEOUT}s: {report}"
    assert not err, report


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_example_runs(example: Example, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    for key in ("skip", "pending"):
        if key in example.options:
            pytest.skip(f"{key}: {example.options[key]}")
    server = request.getfixturevalue("doc_server") if "needs server" in example.options else None
    env = environment(example, tmp_path, server)
    token = env.get("EVENTBUS_TOKEN", "a-token-for-an-example-without-a-server")
    argv = command(example, tmp_path, server, token)
    if "listens" in example.options:
        assert server is not None, f"{example.name}: listens needs a server"
        run_until_it_prints(example, argv, env, tmp_path, server)
    else:
        run_to_the_end(example, argv, env, tmp_path)


# -- the README's command table -----------------------------------------------------------

def test_the_readme_lists_every_command() -> None:
    """Each command of ``eventbus --help`` has a row in the README's command table."""
    done = subprocess.run([sys.executable, "-m", "eventbus", "--help"], capture_output=True, text=True,
                          timeout=60, check=True)
    listed = done.stdout.split("Commands:", 1)[1]
    commands = [line.split()[0] for line in listed.splitlines() if line.startswith("  ") and line.split()]
    assert "serve" in commands and "asyncapi" in commands
    table = (ROOT / "README.md").read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `eventbus ")]
    missing = [name for name in commands if not any(f"`eventbus {name}" in row for row in rows)]
    assert not missing, f"README.md's command table lacks: {missing}"
