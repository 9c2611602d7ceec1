"""``POST /api/events`` with a JSON array: one result per event, partial failure, limits,
and idempotency (event ids, ``Idempotency-Key``), against real servers in every async mode,
and across two servers sharing Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from .server import ServerProcess
from .test_redis import redis_env  # noqa: F401 - fixture: a key prefix of its own on the test Redis

LIMITS = {"EVENTBUS_PUBLISH_MAX_BATCH": "5", "EVENTBUS_PUBLISH_MAX_BATCH_BYTES": "4096"}


def post(server: ServerProcess, body: Any, token: str, **headers: str) -> requests.Response:
    return requests.post(f"{server.url}/api/events", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {token}", **headers})


def history(server: ServerProcess, room: str = "monitoring") -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/api/events", params={"room": room, "after": 0},
                            headers={"Authorization": f"Bearer {server.token()}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def item(n: int, **fields: Any) -> dict[str, Any]:
    return {"type": "tool_executed", "data": {"n": n}, **fields}


def test_a_batch_is_published_in_order_and_a_refused_event_leaves_the_others_published(
        start_server: Callable[..., ServerProcess], async_mode: str) -> None:
    server = start_server(async_mode, env=LIMITS)
    publisher = server.token("pub", ("publisher",))
    response = post(server, [item(0, id="b-0"), item(1, id="b-1"), item(2)], publisher)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["ok"], body["published"], body["failed"], body["duplicates"]) == (True, 3, 0, 0)
    assert [r["id"] for r in body["results"][:2]] == ["b-0", "b-1"]
    assert [r["seq"] for r in body["results"]] == [1, 2, 3]

    mixed = [
        item(3),
        {"type": "no_such_type", "data": {}},
        {"type": "tool_executed", "data": "not an object"},
        item(4, user_id="someone-else"),        # acting for another user needs admin or agent
        item(5, source="pretender"),            # so does naming the source
        item(6, id="not an id!"),
        ["not", "an", "object"],
    ]
    response = post(server, mixed[:5], publisher)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False, False, False, False]
    assert [r.get("error", {}).get("code") for r in results[1:]] == [
        "unknown_event_type", "invalid_data", "forbidden", "forbidden"]
    response = post(server, [*mixed[5:], item(7)], publisher)
    results = response.json()["results"]
    assert [r.get("error", {}).get("code") for r in results] == ["invalid_payload", "invalid_payload", None]

    events = [e for e in history(server) if e["type"] == "tool_executed"]
    assert [e["data"]["n"] for e in events] == [0, 1, 2, 3, 7]
    assert {e["source"] for e in events} == {"http:pub"} and {e["user_id"] for e in events} == {"pub"}
    refusals = server.status()["refusals"]
    assert refusals["forbidden"] >= 2 and refusals["invalid_payload"] >= 2 and refusals["unknown_event_type"] >= 1

    agent = server.token("agent-process", ("publisher", "agent"))
    response = post(server, [item(8, user_id=None, source="researcher")], agent)
    (result,) = response.json()["results"]
    assert result["ok"], result
    last = history(server)[-1]
    assert (last["data"], last["user_id"], last["source"]) == ({"n": 8}, None, "researcher")


def test_batch_limits_are_enforced_before_anything_is_published(
        start_server: Callable[..., ServerProcess], async_mode: str) -> None:
    server = start_server(async_mode, env=LIMITS)
    token = server.token()
    too_many = post(server, [item(n) for n in range(6)], token)
    assert too_many.status_code == 413, too_many.text
    assert too_many.json()["error"]["code"] == "too_many_events"
    too_big = post(server, [{"type": "tool_executed", "data": {"blob": "x" * 1500}} for _ in range(3)], token)
    assert too_big.status_code == 413, too_big.text
    assert too_big.json()["error"]["code"] == "payload_too_large" and "4096" in too_big.json()["error"]["message"]
    empty = post(server, [], token)
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid_payload"
    keyed = post(server, [item(0)], token, **{"Idempotency-Key": "k"})
    assert keyed.status_code == 400 and "Idempotency-Key" in keyed.json()["error"]["message"]
    assert [e for e in history(server) if e["type"] == "tool_executed"] == []
    # One event keeps its own limit (twice EVENTBUS_MAX_EVENT_BYTES), above the batch limit here.
    single = post(server, {"type": "tool_executed", "data": {"blob": "x" * 20000}}, token)
    assert single.status_code == 202, single.text
    assert server.status()["refusals"]["too_many_events"] == 1


def test_a_repeated_event_id_or_idempotency_key_is_published_once(
        start_server: Callable[..., ServerProcess], async_mode: str) -> None:
    server = start_server(async_mode, env=LIMITS)
    token = server.token("pub", ("publisher",))
    first = post(server, [item(0, id="evt-a"), item(1, id="evt-b")], token).json()
    again = post(server, [item(0, id="evt-a"), item(1, id="evt-b"), item(2, id="evt-c")], token).json()
    assert [r.get("duplicate", False) for r in again["results"]] == [True, True, False]
    assert [r["seq"] for r in again["results"][:2]] == [r["seq"] for r in first["results"]]
    assert (again["published"], again["duplicates"]) == (1, 2)

    keyed = {"Idempotency-Key": "order-42"}
    one = post(server, item(3), token, **keyed)
    two = post(server, item(3), token, **keyed)
    assert one.status_code == two.status_code == 202
    assert "duplicate" not in one.json() and two.json()["duplicate"] is True
    assert (two.json()["id"], two.json()["seq"]) == (one.json()["id"], one.json()["seq"])
    other_user = post(server, item(3), server.token("someone", ("publisher",)), **keyed).json()
    assert other_user["id"] != one.json()["id"] and "duplicate" not in other_user  # keys are per user

    events = [e for e in history(server) if e["type"] == "tool_executed"]
    assert [e["data"]["n"] for e in events] == [0, 1, 2, 3, 3]
    assert len({e["id"] for e in events}) == 5


@pytest.mark.redis
def test_with_redis_a_retry_to_another_server_is_a_duplicate(
        start_server: Callable[..., ServerProcess], redis_env: dict[str, str]) -> None:
    """The id markers in Redis dedupe for every server: a publisher that retries on another
    server (its first one died before answering) gets ``duplicate`` and the original seq."""
    one = start_server("threading", env={**LIMITS, **redis_env})
    two = start_server("threading", env={**LIMITS, **redis_env})
    token = one.token()
    first = post(one, [item(0, id="r-a"), item(1, id="r-b")], token).json()["results"]
    retried = post(two, [item(0, id="r-a"), item(1, id="r-b"), item(2, id="r-c")], token).json()["results"]
    assert [r.get("duplicate", False) for r in retried] == [True, True, False]
    assert [r["seq"] for r in retried[:2]] == [r["seq"] for r in first]  # from the id markers
    keyed = {"Idempotency-Key": "k-1"}
    single = post(one, item(3), token, **keyed).json()
    repeat = post(two, item(3), token, **keyed).json()
    assert repeat["duplicate"] is True and (repeat["id"], repeat["seq"]) == (single["id"], single["seq"])
    again = post(one, item(3), token, **keyed).json()  # the first server: its marker holds the seq
    assert again["duplicate"] is True and again["seq"] == single["seq"]
    events = [e for e in history(two) if e["type"] == "tool_executed"]
    assert [e["data"]["n"] for e in events] == [0, 1, 2, 3]
