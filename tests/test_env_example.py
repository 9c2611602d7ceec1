"""Every setting the code reads is documented in .env.example, and the file parses."""

from __future__ import annotations

import re
from pathlib import Path

from eventbus.testing import started_config

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"\b((?:EVENTBUS|WEBSOCKET)_[A-Z0-9_]+)\b")
# Read by tests and tools, not by the product.
NOT_SETTINGS = {"EVENTBUS_TEST_REDIS_URL", "EVENTBUS_TEST_ASYNC_MODES", "EVENTBUS_PATCHED_MODE",
                "EVENTBUS_TOKEN", "EVENTBUS_CONFIG", "EVENTBUS_WEBHOOK_",
                "EVENTBUS_DASHBOARD_URL"}  # a Flask app.config key


def read_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def test_every_variable_in_the_code_is_documented() -> None:
    used: set[str] = set()
    for package in ("eventbus", "plugins"):
        for path in (ROOT / package).rglob("*.py"):
            used.update(NAME.findall(path.read_text()))
    documented = read_example()
    text = (ROOT / ".env.example").read_text()
    missing = sorted(n for n in used - NOT_SETTINGS if n not in documented and n not in text)
    assert not missing, f"not in .env.example: {missing}"


def test_the_example_values_are_valid() -> None:
    env = dict(read_example().items())
    config = started_config(env)
    assert config.port == 5050 and config.cors_origins == ["http://localhost:3000", "http://localhost:3001"]


def test_every_declared_setting_is_in_the_example_and_the_docs_table(isolated_env) -> None:
    """.env.example names every setting the core and the bundled plugins declare, and the
    table of docs/settings.md is exactly what `eventbus settings --markdown` prints."""
    from eventbus.cli import settings_markdown
    from eventbus.testing import started_config

    config = started_config({k: v for k, v in isolated_env.items() if k != "EVENTBUS_DATA_DIR"})
    owners = set(config.owners.values())
    assert {"eventbus", "eventbus_auth", "eventbus_logsink", "eventbus_socketio", "eventbus_webhook"} <= owners
    documented = read_example()
    missing = sorted(s.env for s in config.declared.values() if s.env not in documented)
    assert not missing, f"declared but not in .env.example: {missing}"
    table = settings_markdown(config.settings())
    doc = (ROOT / "docs" / "settings.md").read_text()
    assert table in doc, "docs/settings.md: paste the output of `eventbus settings --markdown`"
