"""Private chat sessions and the publisher's identity, against real servers in every async mode.

A session belongs to the user who opened it (or the users a token lists); other users are
refused on join, resume, publish and history, roles ``admin`` and ``agent`` get in, and an
event published over HTTP speaks for its publisher unless the publisher may act for others.
With Redis, the owner is the same on every server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from eventbus_auth import create_token

from ..e2e.ordered import ordered_client
from ..e2e.server import ServerProcess
from .probe import wait_for

REDIS_URL = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Chat:
    """A /chat client that records what it receives."""

    def __init__(self, server: ServerProcess, token: str, auth: dict[str, Any] | None = None):
        self.events: list[tuple[str, Any]] = []
        self.sio = ordered_client(reconnection=False)
        self.sio.on("*", lambda event, *args: self.events.append((event, args[0] if args else None)),
                    namespace="/chat")
        self.sio.connect(server.url, namespaces=["/chat"], auth={"token": token, **(auth or {})},
                         wait_timeout=10)

    def call(self, event: str, data: Any) -> dict[str, Any]:
        return self.sio.call(event, data, namespace="/chat", timeout=10)

    def messages(self) -> list[dict[str, Any]]:
        return [data for event, data in list(self.events) if event == "chat_message"]

    def close(self) -> None:
        self.sio.disconnect()


@pytest.fixture
def chat() -> Iterator[Callable[..., Chat]]:
    made: list[Chat] = []

    def connect(server: ServerProcess, token: str, **kwargs: Any) -> Chat:
        made.append(Chat(server, token, **kwargs))
        return made[-1]

    yield connect
    for client in made:
        client.close()


def token(server: ServerProcess, user: str, *roles: str, sessions: list[str] | None = None) -> str:
    return create_token(server.env["EVENTBUS_SECRET_KEY"], user, roles, 600, sessions=sessions)


def history(server: ServerProcess, bearer: str, room: str) -> requests.Response:
    return requests.get(f"{server.url}/api/events", params={"room": room, "after": 0},
                        headers={"Authorization": f"Bearer {bearer}"}, timeout=10)


def post(server: ServerProcess, bearer: str, **body: Any) -> requests.Response:
    return requests.post(f"{server.url}/api/events", json=body,
                         headers={"Authorization": f"Bearer {bearer}"}, timeout=10)


def refused(ack: dict[str, Any]) -> bool:
    return ack.get("ok") is False and ack["error"]["code"] == "forbidden"


def test_a_session_belongs_to_the_user_who_opened_it(server: ServerProcess, chat: Callable[..., Chat]) -> None:
    room = "session:s-alice"
    alice = chat(server, token(server, "alice"))
    assert alice.call("join_room", {"room": room})["ok"]
    sent = alice.call("chat_message", {"session_id": "s-alice", "message": "my secret plan"})
    assert sent["ok"], sent

    # bob, signed in, knows the id: every way in is refused.
    bob = chat(server, token(server, "bob"), auth={"resume": {"rooms": {room: 0}}})
    assert refused(bob.call("join_room", {"room": room, "after": 0}))
    assert refused(bob.call("resume", {"rooms": {room: 0}}))
    assert refused(bob.call("chat_message", {"session_id": "s-alice", "message": "hi, it's alice"}))
    assert refused(bob.call("typing_indicator", {"session_id": "s-alice", "typing": True}))
    reading = history(server, token(server, "bob"), room)
    assert reading.status_code == 403 and reading.json()["error"]["code"] == "forbidden"
    # His own session works, and nothing of alice's reached him (not even by the resume in connect).
    assert bob.call("join_room", {"room": "session:s-bob"})["ok"]
    assert bob.messages() == []
    assert [m["data"]["message"] for m in alice.messages()] == ["my secret plan"]

    # Over HTTP, a publisher can neither post into her session nor speak as her.
    publisher = token(server, "bob", "publisher")
    into = post(server, publisher, type="chat_message", session_id="s-alice", data={"message": "x"})
    assert into.status_code == 403 and into.json()["error"]["code"] == "forbidden"
    as_alice = post(server, publisher, type="chat_message", session_id="s-bob", user_id="alice",
                    data={"message": "x"})
    assert as_alice.status_code == 403 and as_alice.json()["error"]["code"] == "forbidden"
    as_alice = post(server, publisher, type="tool_executed", user_id="alice", data={"tool": "t"})
    assert as_alice.status_code == 403
    assert post(server, publisher, type="chat_message", session_id="s-bob", user_id="bob",
                data={"message": "mine"}).status_code == 202

    # alice comes back on a new connection: the session is still hers.
    alice.close()
    again = chat(server, token(server, "alice"))
    rejoined = again.call("join_room", {"room": room, "after": 0})
    assert rejoined["ok"] and rejoined["replayed"] >= 1, rejoined  # her message and the presence events
    wait_for(lambda: again.messages(), 10)
    assert again.messages()[0]["id"] == sent["id"]
    assert sent["id"] in [e["id"] for e in history(server, token(server, "alice"), room).json()["events"]]
    assert again.call("resume", {"rooms": {room: sent["seq"]}})["ok"]

    # An admin may join and read any session; an agent may join and speak in it.
    admin = chat(server, token(server, "root", "admin"))
    assert admin.call("join_room", {"room": room})["ok"]
    assert history(server, token(server, "root", "admin"), room).status_code == 200
    agent = chat(server, token(server, "helper-bot", "agent"))
    assert agent.call("join_room", {"room": room})["ok"]
    reply = agent.call("chat_message", {"session_id": "s-alice", "message": "on it"})
    assert reply["ok"], reply
    wait_for(lambda: any(m["id"] == reply["id"] for m in again.messages()), 10)
    # An agent's backend may post for the user it serves.
    relayed = post(server, token(server, "helper-bot", "publisher", "agent"), type="chat_message",
                   session_id="s-alice", user_id="alice", data={"message": "relayed"})
    assert relayed.status_code == 202, relayed.text
    wait_for(lambda: any(m["id"] == relayed.json()["id"] for m in again.messages()), 10)
    assert next(m for m in again.messages() if m["id"] == relayed.json()["id"])["user_id"] == "alice"

    # A token that lists the session lets its user in too; one that does not list it, not.
    assert chat(server, token(server, "carol", sessions=["s-alice"])).call("join_room", {"room": room})["ok"]
    assert refused(chat(server, token(server, "dave", sessions=["s-other"])).call("join_room", {"room": room}))
    assert server.status()["refusals"]["forbidden"] >= 9  # each refusal above is counted


def test_open_mode_lets_any_user_in_but_not_speak_for_others(start_server: Callable[..., ServerProcess],
                                                             async_mode: str, chat: Callable[..., Chat]) -> None:
    server = start_server(async_mode, env={"EVENTBUS_CHAT_SESSIONS": "open"})
    alice = chat(server, token(server, "alice"))
    assert alice.call("join_room", {"room": "session:shared"})["ok"]
    bob = chat(server, token(server, "bob"))
    assert bob.call("join_room", {"room": "session:shared"})["presence"] == ["alice", "bob"]
    sent = bob.call("chat_message", {"session_id": "shared", "message": "hello"})
    assert sent["ok"]
    wait_for(lambda: alice.messages(), 10)
    assert history(server, token(server, "bob"), "session:shared").status_code == 200
    publisher = token(server, "bob", "publisher")
    assert post(server, publisher, type="chat_message", session_id="shared",
                data={"message": "x"}).status_code == 202
    # The publisher's identity rule does not depend on the session policy.
    assert post(server, publisher, type="chat_message", session_id="shared", user_id="alice",
                data={"message": "x"}).status_code == 403


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    """The test Redis under a key prefix of this test's own, removed afterwards."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, decode_responses=True)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"EVENTBUS_TEST_REDIS_URL={REDIS_URL} does not answer: {exc}")
    prefix = "{ebtest-" + uuid.uuid4().hex[:10] + "}"
    yield {"EVENTBUS_REDIS_URL": REDIS_URL, "EVENTBUS_REDIS_PREFIX": prefix}
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
def test_the_owner_is_the_same_on_every_server(start_server: Callable[..., ServerProcess], async_mode: str,
                                               redis_env: dict[str, str], chat: Callable[..., Chat]) -> None:
    first = start_server(async_mode, env=redis_env)
    second = start_server(async_mode, env=redis_env)
    alice = chat(first, token(first, "alice"))
    assert alice.call("join_room", {"room": "session:s-x"})["ok"]
    sent = alice.call("chat_message", {"session_id": "s-x", "message": "only for me"})
    assert sent["ok"]

    bob = chat(second, token(second, "bob"))
    assert refused(bob.call("join_room", {"room": "session:s-x", "after": 0}))
    assert history(second, token(second, "bob"), "session:s-x").status_code == 403
    assert refused(bob.call("chat_message", {"session_id": "s-x", "message": "let me in"}))

    # alice moves to the other server (a reconnect behind a load balancer): still hers.
    alice.close()
    moved = chat(second, token(second, "alice"))
    assert moved.call("join_room", {"room": "session:s-x", "after": 0})["ok"]
    wait_for(lambda: moved.messages(), 10)
    assert moved.messages()[0]["id"] == sent["id"]

    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    key = f"{redis_env['EVENTBUS_REDIS_PREFIX']}:session-owner:s-x"
    assert client.get(key) == "alice" and client.ttl(key) > 0
    client.close()
