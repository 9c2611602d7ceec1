"""Every setting the code reads is documented in .env.example, and the file parses."""

from __future__ import annotations

import re
from pathlib import Path

from eventbus.config import Config

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
    config = Config.from_env(env)
    assert config.port == 5050 and config.cors_origins == ["http://localhost:3000", "http://localhost:3001"]
