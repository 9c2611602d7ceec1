"""A webhook receiver for tests and benchmarks: a loopback HTTP server that verifies every
delivery with the official ``standardwebhooks`` library and records what it accepted."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: ``respond(request)`` returns a status, or ``(status, headers)``; ``request`` has ``id``,
#: ``attempt`` (1-based, per webhook-id), ``headers`` and ``body``.
Responder = Callable[[dict[str, Any]], "int | tuple[int, dict[str, str]]"]


class WebhookReceiver:
    """Start with :meth:`start` (or as a context manager); always :meth:`stop` it.

    :param secret: the endpoint's ``whsec_`` secret, checked on every request.
    :param respond: decides each answer; default 204.
    :param port: 0 for a free port.
    """

    def __init__(self, secret: str, respond: Responder | None = None, port: int = 0):
        try:
            from standardwebhooks.webhooks import Webhook
        except ImportError:  # pragma: no cover - depends on the installation
            raise ImportError("the webhook test receiver needs standardwebhooks: "
                              "pip install 'eventbus[test]'") from None
        self._webhook = Webhook(secret)
        self.respond = respond or (lambda request: 204)
        self.port = port
        self.attempts: Counter[str] = Counter()
        self.accepted: list[dict[str, Any]] = []  # verified requests answered with 2xx
        self.requests: list[dict[str, Any]] = []  # every verified request, any answer
        self.invalid = 0  # requests that failed verification
        self.release = threading.Event()  # set on stop, so hanging responders return
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers = receiver._handle(body, dict(self.headers.items()))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        from standardwebhooks.webhooks import WebhookVerificationError

        try:
            payload = self._webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            with self._cond:
                self.invalid += 1
            return 400, {"X-Error": type(exc).__name__}
        lowered = {k.lower(): v for k, v in headers.items()}
        msg_id = lowered["webhook-id"]
        with self._cond:
            self.attempts[msg_id] += 1
            request = {"id": msg_id, "attempt": self.attempts[msg_id], "headers": lowered,
                       "body": payload, "received_at": time.time()}
            self.requests.append(request)
        answer = self.respond(request)
        status, extra = answer if isinstance(answer, tuple) else (answer, {})
        with self._cond:
            if 200 <= status < 300:
                self.accepted.append(request)
            self._cond.notify_all()
        return status, extra

    # -- assertions ------------------------------------------------------------------
    def ids(self) -> set[str]:
        """Distinct webhook-ids accepted: what a receiver that drops duplicates keeps."""
        with self._cond:
            return {r["id"] for r in self.accepted}

    def wait_for_ids(self, ids: Iterable[str], timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until every id in ``ids`` was accepted; ``AssertionError`` after ``timeout``."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not wanted <= {r["id"] for r in self.accepted}:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = wanted - {r["id"] for r in self.accepted}
                    raise AssertionError(f"receiver: {len(missing)} of {len(wanted)} ids not delivered "
                                         f"in {timeout}s (invalid signatures: {self.invalid}); "
                                         f"e.g. {sorted(missing)[:3]}")
                self._cond.wait(min(left, 0.5))
            return list(self.accepted)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` verified requests arrived (any answer)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: {len(self.requests)} of {count} requests in {timeout}s")
                self._cond.wait(min(left, 0.5))
            return list(self.requests)


def decode(request: dict[str, Any]) -> dict[str, Any]:
    """The envelope inside a recorded request's body."""
    body = request["body"]
    return body["data"] if isinstance(body, dict) else json.loads(body)["data"]
