"""The client transport of docs/plugins.md (examples/eventbus_longpoll): newline-delimited JSON
over long-polling, built from the bus's sign-in, authorization and history and a route hook."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import token

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "eventbus_longpoll" / "eventbus_longpoll.py"


@pytest.fixture
def longpoll() -> Any:
    spec = importlib.util.spec_from_file_location("eventbus_longpoll", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def lines(response: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def test_replay_then_wait_for_the_next_event(make_app: Any, longpoll: Any) -> None:
    app, manager = make_app(plugins=(longpoll,))
    bus = manager.bus
    http = app.test_client()
    auth = {"Authorization": f"Bearer {token('watcher', ())}"}
    for i in range(3):
        bus.emit("tool_executed", {"tool": "search", "i": i})
    first = http.get("/api/poll?room=monitoring&after=0", headers=auth)
    assert first.status_code == 200 and first.mimetype == "application/x-ndjson"
    got = lines(first)
    assert [e["data"]["i"] for e in got] == [0, 1, 2] and [e["seq"] for e in got] == [1, 2, 3]
    assert first.headers["X-Latest-Seq"] == "3" and first.headers["X-Complete"] == "true"

    # Nothing after seq 3 yet: the request waits until the next event arrives.
    later = threading.Timer(0.3, lambda: bus.emit("agent_completed", {"status": "ok"}))
    later.start()
    started = time.monotonic()
    waited = http.get("/api/poll?room=monitoring&after=3&wait=10", headers=auth)
    later.join()
    assert [e["type"] for e in lines(waited)] == ["agent_completed"]
    assert 0.2 < time.monotonic() - started < 10
    # And with nothing to come it answers empty when the wait is over.
    empty = http.get("/api/poll?room=monitoring&after=4&wait=0.2", headers=auth)
    assert empty.status_code == 200 and lines(empty) == [] and empty.headers["X-Latest-Seq"] == "4"


def test_it_signs_in_and_authorizes_like_every_route(make_app: Any, longpoll: Any) -> None:
    app, _manager = make_app(plugins=(longpoll,))
    http = app.test_client()
    assert http.get("/api/poll?room=monitoring").get_json()["error"]["code"] == "unauthorized"
    reader = {"Authorization": f"Bearer {token('bob', ())}"}
    admin_room = http.get("/api/poll?room=admin&wait=0", headers=reader)
    assert admin_room.status_code == 403 and admin_room.get_json()["error"]["code"] == "forbidden"
    bad = http.get("/api/poll?room=bad room&wait=0", headers=reader)
    assert bad.status_code == 400
    assert http.get("/api/poll?room=admin&wait=0", headers={
        "Authorization": f"Bearer {token('root', ('admin',))}"}).status_code == 200
