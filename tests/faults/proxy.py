"""A TCP proxy for fault tests: forwards a local port to a server and can reset every
connection through it (an RST, as a broken network or a NAT timeout sends), refuse new ones,
or reset only the new ones whose first bytes start a given request.

It runs an asyncio loop on a thread of its own; the test calls :meth:`TcpProxy.reset` and
:meth:`TcpProxy.refuse` from its own thread.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Any

#: ``SO_LINGER`` on, timeout 0: ``close()`` then sends an RST instead of a FIN.
LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s connection with an RST."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass  # already closed
    writer.transport.abort()


class TcpProxy:
    """``127.0.0.1:<port>`` -> ``upstream_host:upstream_port``, one upstream connection per
    client connection. ``counters``: ``accepted``, ``refused``, ``reset`` (connections)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.counters = {"accepted": 0, "refused": 0, "reset": 0}
        self._refusing = False
        self._failing: bytes | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _call(self, coroutine: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def connections(self) -> int:
        """Client connections open through the proxy now."""
        return len(self._pairs)

    def reset(self) -> int:
        """Reset every open connection, on both sides; returns how many."""

        async def run() -> int:
            pairs = list(self._pairs)
            for client, upstream in pairs:
                _reset(client)
                _reset(upstream)
            self._pairs.clear()
            self.counters["reset"] += len(pairs)
            return len(pairs)

        return self._call(run())

    def refuse(self, refusing: bool = True) -> None:
        """While ``refusing``, reset open connections and answer new ones with an RST."""
        self._refusing = refusing
        if refusing:
            self.reset()

    def fail_requests(self, prefix: bytes | None) -> None:
        """Reset each new connection whose first bytes start with ``prefix`` (e.g.
        ``b"GET /api/events"``: history reads fail, sockets pass); ``None`` stops it."""
        self._failing = prefix

    def close(self) -> None:
        if not self._thread.is_alive():
            if not self._loop.is_running():
                self._loop.close()
            return

        async def run() -> None:
            if self._server is not None:
                self._server.close()
            for client, upstream in list(self._pairs):
                client.transport.abort()
                upstream.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._call(run())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()  # its selector and self-pipe sockets

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.counters["refused"] += 1
            _reset(writer)
            return
        first = b""
        if self._failing is not None:
            first = await reader.read(65536)  # the client speaks first (HTTP, WebSocket upgrade)
            if first.startswith(self._failing):
                self.counters["refused"] += 1
                _reset(writer)
                return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.counters["refused"] += 1
            _reset(writer)  # nothing listens upstream: the client sees a reset, as without a proxy
            return
        self.counters["accepted"] += 1
        if first:
            up_writer.write(first)
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()  # the other side ended: pass the close on
