"""Bad input against a real server: bodies bounded by bytes read, whatever the encoding;
malformed, too deep or non-Unicode JSON answered with a JSON error (HTTP) or an error ack
(Socket.IO) that leaves the connection usable; history queries that name the bad field."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import requests
import socketio

from ..e2e.server import ServerProcess
from .probe import ATTEMPTS, HealthProbe, rss_kib

MiB = 1024 * 1024
ATTACK_BYTES = 100 * MiB
RSS_BUDGET_KIB = 20 * 1024
HEALTH_P99_MS = 100.0
DEPTH = 32  # Config.max_json_depth default


def body_stream(total: int, head: bytes = b'{"type": "agent_started", "data": {"x": "',
                piece: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes of one never-ending JSON string, made as they are sent."""
    yield head
    block = b"a" * piece
    for _ in range((total - len(head)) // piece):
        yield block


class PeakRss:
    """Samples the server's resident memory while the ``with`` block runs."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.pid = pid
        self.interval = interval
        self.before = rss_kib(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(2)
        self.peak = max(self.peak, rss_kib(self.pid))

    @property
    def growth_kib(self) -> int:
        return self.peak - self.before


@dataclass
class Answer:
    status: int
    text: str
    sent: int  # body bytes sent before the answer arrived
    finished: bool  # the whole body was sent

    @property
    def code(self) -> str | None:
        return json.loads(self.text)["error"]["code"]


def post_chunked(url: str, path: str, token: str | None, chunks: Iterator[bytes],
                 timeout: float = 30.0) -> Answer:
    """POST a chunked body over a raw socket, looking for the answer before every chunk:
    a server that answers before reading the body is seen doing so."""
    parts = urlparse(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
                "Transfer-Encoding: chunked"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent, finished = 0, True
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                finished = False
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                finished = False
                break
            sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Answer(response.status, response.read().decode(errors="replace"), sent, finished)
    finally:
        sock.close()


def warm(server: ServerProcess) -> None:
    """A few ordinary requests, so what is measured next is the attack, not start-up."""
    for _ in range(3):
        server.publish("agent_started", {"agent_name": "warm-up"})
        requests.get(f"{server.url}/api/health", timeout=5)


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    body = response.json()
    assert body["ok"] is False and body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


# -- body size ---------------------------------------------------------------------------


def test_chunked_body_over_the_limit_is_refused_with_bounded_memory(server: ServerProcess) -> None:
    """100 MB streamed chunked to POST /api/events (three times, so the health probe
    samples the attack): a JSON 413 after the limit (128 KiB), while the server's memory
    and other clients' /api/health stay flat."""
    warm(server)
    headers = {"Authorization": f"Bearer {server.token()}", "Content-Type": "application/json"}
    for _attempt in range(ATTEMPTS):
        with PeakRss(server.proc.pid) as rss, HealthProbe(server.url) as probe:
            start = time.perf_counter()
            responses = [requests.post(f"{server.url}/api/events", data=body_stream(ATTACK_BYTES),
                                       headers=headers, timeout=60) for _ in range(3)]
            took = time.perf_counter() - start
        print(f"[{server.async_mode}] 3 x 100 MB chunked: {[r.status_code for r in responses]} in {took:.2f}s, "
              f"RSS +{rss.growth_kib} KiB, health {probe.summary()}")
        if probe.p99_ms < HEALTH_P99_MS:
            break
    for response in responses:
        assert_error(response, 413, "payload_too_large")
    assert rss.growth_kib < RSS_BUDGET_KIB, f"RSS grew {rss.growth_kib} KiB"
    assert not probe.errors and probe.samples, probe.summary()
    assert probe.p99_ms < HEALTH_P99_MS, probe.summary()
    assert server.status()["refusals"]["payload_too_large"] >= 1


def test_publish_is_refused_before_the_body_is_read(server: ServerProcess) -> None:
    """Without a token (401) or without the publish role (403) the answer comes while the
    client is still sending: no byte of the body is needed, none is kept."""
    warm(server)
    reader = server.token("reader", ())
    with PeakRss(server.proc.pid) as rss:
        for token, status, code in ((None, 401, "unauthorized"), (reader, 403, "forbidden")):
            answer = post_chunked(server.url, "/api/events", token, body_stream(ATTACK_BYTES))
            assert (answer.status, answer.code) == (status, code), answer
            assert not answer.finished and answer.sent < 16 * MiB, answer
            print(f"[{server.async_mode}] {status} after {answer.sent} body bytes")
    print(f"[{server.async_mode}] refused before the body: RSS +{rss.growth_kib} KiB")
    assert rss.growth_kib < RSS_BUDGET_KIB, f"RSS grew {rss.growth_kib} KiB"


def test_every_body_is_bounded(server: ServerProcess) -> None:
    """The admin disconnect route reads at most 16 KiB, chunked or not; a Content-Length
    over the limit is refused before reading; the answers are JSON."""
    admin = {"Authorization": f"Bearer {server.token()}", "Content-Type": "application/json"}
    url = f"{server.url}/api/connections/disconnect"
    assert_error(requests.post(url, data=body_stream(4 * MiB, b'{"user_id": "'), headers=admin, timeout=30),
                 413, "payload_too_large")
    declared = requests.post(url, data=b'{"user_id": "' + b"a" * 20000 + b'"}', headers=admin, timeout=30)
    assert_error(declared, 413, "payload_too_large")
    chunked_ok = requests.post(url, data=iter([b'{"user_id": ', b'"nobody"}']), headers=admin, timeout=30)
    assert chunked_ok.status_code == 200 and chunked_ok.json()["disconnected"] == [], chunked_ok.text
    chunked_event = requests.post(f"{server.url}/api/events", headers=admin, timeout=30,
                                  data=iter([b'{"type": "agent_started", ', b'"data": {"agent_name": "c"}}']))
    assert chunked_event.status_code == 202, chunked_event.text


def test_engineio_polling_post_with_a_chunked_body_is_bounded(server: ServerProcess) -> None:
    """Engine.IO reads a long-polling POST by its Content-Length: a chunked one (100 MB)
    is refused with 411 before it is buffered, and the server stays responsive."""
    handshake = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=5)
    sid = json.loads(handshake.text[1:])["sid"]
    warm(server)
    for _attempt in range(ATTEMPTS):
        with PeakRss(server.proc.pid) as rss, HealthProbe(server.url) as probe:
            response = requests.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                                     data=body_stream(ATTACK_BYTES, head=b"4"), timeout=60)
        print(f"[{server.async_mode}] Engine.IO chunked POST: {response.status_code}, "
              f"RSS +{rss.growth_kib} KiB, health {probe.summary()}")
        if probe.p99_ms < HEALTH_P99_MS:
            break
    assert response.status_code == 411 and response.json()["code"] == "length_required", response.text[:200]
    assert rss.growth_kib < RSS_BUDGET_KIB, f"RSS grew {rss.growth_kib} KiB"
    assert not probe.errors and probe.p99_ms < HEALTH_P99_MS, probe.summary()


# -- JSON over HTTP ----------------------------------------------------------------------


def nested(depth: int) -> str:
    """``depth`` levels of objects: ``{"a": {"a": ... {} ...}}``."""
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


BAD_BODIES = [
    # (body bytes, error code)
    (b'{"type": "agent_started", "data": ' + nested(1000).encode() + b"}", "too_deep"),
    (b'{"type": "agent_started", "data": ' + nested(DEPTH).encode() + b"}", "too_deep"),  # body: 33
    (b'{"type": "agent_started", "data": {"x": "\\ud800"}}', "invalid_json"),
    (b'{"type": "agent_started", "data": {"\\udfff": 1}}', "invalid_json"),
    (b'{"type": "agent_started", "data": {"x": "\xff\xfe"}}', "invalid_json"),
    (b'{"type": "agent_started", "data": {"x": NaN}}', "invalid_json"),
    (b'{"type": "agent_started", "data": {"x": ', "invalid_json"),
    (b"", "invalid_json"),
]


def test_bad_json_bodies_get_json_errors(server: ServerProcess) -> None:
    admin = {"Authorization": f"Bearer {server.token()}", "Content-Type": "application/json"}
    for body, code in BAD_BODIES:
        response = requests.post(f"{server.url}/api/events", data=body, headers=admin, timeout=10)
        assert_error(response, 400, code)
    at_limit = b'{"type": "agent_started", "data": ' + nested(DEPTH - 1).encode() + b"}"  # body: 32
    assert requests.post(f"{server.url}/api/events", data=at_limit, headers=admin, timeout=10).status_code == 202
    paired = '{"type": "agent_started", "data": {"x": "\\ud83d\\ude00"}}'
    accepted = requests.post(f"{server.url}/api/events", data=paired, headers=admin, timeout=10)
    assert accepted.status_code == 202, accepted.text
    disconnect = requests.post(f"{server.url}/api/connections/disconnect", data=b'{"sid": [' * 500,
                               headers=admin, timeout=10)
    assert_error(disconnect, 400, "too_deep")
    refusals = server.status()["refusals"]
    assert refusals["too_deep"] >= 3 and refusals["invalid_json"] >= 6, refusals


def test_no_api_route_answers_html(server: ServerProcess) -> None:
    assert_error(requests.get(f"{server.url}/api/nope", timeout=5), 404, "not_found")
    wrong = requests.get(f"{server.url}/api/connections/disconnect", timeout=5)
    assert_error(wrong, 405, "method_not_allowed")
    assert "POST" in wrong.headers["Allow"]
    assert requests.get(f"{server.url}/", timeout=5).headers["Content-Type"].startswith("text/html")


def test_a_failing_api_handler_answers_json(tmp_path: Any) -> None:
    """A handler bug on an API path is a JSON 500 (logged on the server); other paths keep
    the app's own error pages. In-process: a real server has no failing route."""
    import eventbus_auth
    import eventbus_socketio
    from eventbus import Config, EventBus

    bus = EventBus(Config(secret_key="s" * 40, data_dir=str(tmp_path)),
                   plugins=[eventbus_auth, eventbus_socketio], load_entrypoints=False)
    try:
        app = eventbus_socketio.create_app(bus=bus)

        @app.get("/api/boom")
        def boom() -> Any:
            raise RuntimeError("a bug")

        @app.get("/boom")
        def page_boom() -> Any:
            raise RuntimeError("a bug")

        http = app.test_client()
        failed = http.get("/api/boom")
        assert failed.status_code == 500 and failed.json["error"]["code"] == "internal_error", failed.data
        assert "a bug" not in failed.get_data(as_text=True)
        assert http.get("/boom").content_type.startswith("text/html")
        assert http.get("/nowhere").content_type.startswith("text/html")
        assert app.extensions["eventbus"].counters["http_errors"] == 1
    finally:
        bus.close()


def test_history_query_errors_name_their_field(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {server.token()}"}
    for query, code, field in (("room=bad%20room", "invalid_room", "room"),
                               ("after=3", "invalid_room", "room"),
                               ("room=monitoring&after=x", "invalid_query", "after"),
                               ("room=monitoring&after=-1", "invalid_query", "after"),
                               ("room=monitoring&limit=0", "invalid_query", "limit"),
                               ("room=monitoring&limit=many", "invalid_query", "limit")):
        response = requests.get(f"{server.url}/api/events?{query}", headers=auth, timeout=5)
        message = assert_error(response, 400, code)["message"]
        others = {"after", "limit"} - {field}
        assert field in message and not any(f"'{other}'" in message for other in others), (query, message)


# -- JSON over Socket.IO -----------------------------------------------------------------


class RawSocketIO:
    """A python-socketio client that can also send hand-made packet text and wait for the
    ack of a given id."""

    def __init__(self, server: ServerProcess, namespace: str = "/chat"):
        self.namespace = namespace
        self.sio = socketio.Client(reconnection=False)
        self.disconnects: list[Any] = []
        self.sio.on("disconnect", lambda *a: self.disconnects.append(a), namespace=namespace)
        self.sio.connect(server.url, namespaces=[namespace], auth={"token": server.token()},
                         transports=["websocket"], wait_timeout=10)

    def send_raw(self, body: str, timeout: float = 10.0) -> Any:
        """Send ``2<namespace>,<id><body>`` and return the ack's first argument."""
        done = threading.Event()
        got: list[Any] = []

        def callback(*args: Any) -> None:
            got.extend(args)
            done.set()

        ack_id = self.sio._generate_ack_id(self.namespace, callback)
        self.sio.eio.send(f"2{self.namespace},{ack_id}{body}")
        assert done.wait(timeout), f"no ack for {body[:80]!r}"
        return got[0] if got else None

    def call(self, event: str, data: Any) -> Any:
        return self.sio.call(event, data, namespace=self.namespace, timeout=10)

    def close(self) -> None:
        self.sio.disconnect()


BAD_PACKETS = [
    # (packet data after the ack id, error code)
    ('["chat_message", ' + "[" * 1000 + "]" * 1000 + "]", "too_deep"),
    ('["chat_message", {"session_id": "s-in", "message": "hi", "metadata": ' + nested(DEPTH) + "}]",
     "too_deep"),
    ('["chat_message", {"session_id": "s-in", "message": "\\ud800"}]', "invalid_json"),
    ('["chat_message", {"session_id": "s-in", "message": "hi"', "invalid_json"),
    ('{"not": "a list"}', "invalid_payload"),
]


def test_bad_packets_get_error_acks_and_the_connection_stays(server: ServerProcess) -> None:
    """Each bad packet is answered on its ack id with the code, and the next event on the
    same connection works. ``metadata`` may nest to the limit less one (the chat payload
    is a level of its own)."""
    client = RawSocketIO(server)
    try:
        at_limit = client.send_raw('["chat_message", {"session_id": "s-in", "message": "deep", "metadata": '
                                   + nested(DEPTH - 1) + "}]")
        assert at_limit["ok"] is True, at_limit
        for body, code in BAD_PACKETS:
            ack = client.send_raw(body)
            assert ack["ok"] is False and ack["error"]["code"] == code, (body[:60], ack)
            assert ack["error"]["message"]
            sent = client.call("chat_message", {"session_id": "s-in", "message": "still here"})
            assert sent["ok"] is True, sent
        assert client.sio.connected and not client.disconnects
        refusals = server.status()["refusals"]
        assert refusals["too_deep"] >= 2 and refusals["invalid_json"] >= 2, refusals
    finally:
        client.close()
