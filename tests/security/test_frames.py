"""Oversized WebSocket messages, sent raw and unauthenticated right after the Engine.IO
handshake, against a real server in every async mode.

Each attack must close only the attacker's connection, before the server holds much more
than the 1 MiB frame limit, and must not slow anyone else down.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from eventbus_socketio.manager import TRANSPORT_FRAME_LIMIT

from ..e2e.server import ServerProcess, selected_modes
from .probe import ATTEMPTS, HealthProbe, wait_for

ATTACK_BYTES = 100 * 1000 * 1000
MAX_RSS_GROWTH_KIB = 10 * 1024
OP_CONTINUATION, OP_TEXT, OP_CLOSE = 0x0, 0x1, 0x8


# -- a raw WebSocket client -----------------------------------------------------------------
def _mask(data: bytes, key: bytes) -> bytes:
    """RFC 6455 masking, at C speed (big-integer XOR)."""
    n = len(data)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def _header(opcode: int, length: int, key: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    return head + key


class RawWebSocket:
    """A WebSocket to ``/socket.io/?EIO=4&transport=websocket`` spoken by hand, so a test
    can announce and stream frames no well-behaved client would send."""

    def __init__(self, port: int, offer_deflate: bool = False, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET /socket.io/?EIO=4&transport=websocket HTTP/1.1", f"Host: 127.0.0.1:{port}",
                 "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        if offer_deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        assert head.startswith("HTTP/1.1 101"), head
        self.response_headers = head.lower()
        opcode, payload = self.recv_frame()
        assert opcode == OP_TEXT and payload.startswith(b"0{"), payload[:80]  # Engine.IO OPEN

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> None:
        key = os.urandom(4)
        self.sock.sendall(_header(opcode, len(payload), key, fin, rsv1) + _mask(payload, key))

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode())

    def stream(self, frames: Iterator[tuple[int, int, bool]], chunk: bytes = b"a" * 65536,
               deadline: float = 20.0) -> int:
        """Send the frames ``(opcode, length, fin)`` with payloads of repeated ``chunk``
        (masked once: its length is a multiple of 4), until all are sent or the server
        closes the connection; returns the payload bytes sent."""
        assert len(chunk) % 4 == 0
        key = os.urandom(4)
        masked = _mask(chunk, key)
        sent = 0
        end = time.monotonic() + deadline
        try:
            for opcode, length, fin in frames:
                self.sock.sendall(_header(opcode, length, key, fin))
                left = length
                while left:
                    assert time.monotonic() < end, f"the server still reads after {sent} bytes"
                    piece = masked if left >= len(masked) else masked[:left]
                    self.sock.sendall(piece)
                    left -= len(piece)
                    sent += len(piece)
        except (TimeoutError, ConnectionError, OSError):
            pass
        return sent

    def closed(self, timeout: float = 10.0) -> bool:
        """True once the server has ended the connection (a close frame, EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                opcode, _ = self.recv_frame()
                if opcode == OP_CLOSE:
                    return True
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False

    def close_code(self, timeout: float = 10.0) -> int | None:
        """The code of the server's close frame (``None`` if the connection ended without one)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                opcode, payload = self.recv_frame()
                if opcode == OP_CLOSE:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        except (ConnectionError, OSError):
            return None

    def close(self) -> None:
        self.sock.close()


# -- memory of the server ------------------------------------------------------------------
def reset_peak_rss(pid: int) -> None:
    """Reset the kernel's high-water mark of ``pid``'s resident memory (VmHWM)."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


class PeakMemory:
    """``with PeakMemory(pid) as peak:`` ... ``peak.growth_kib``: how far the server's
    resident memory rose above where it stood when the block began."""

    def __init__(self, pid: int):
        self.pid = pid
        self.growth_kib = 0

    def __enter__(self) -> PeakMemory:
        reset_peak_rss(self.pid)
        self.start = peak_rss_kib(self.pid)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.growth_kib = peak_rss_kib(self.pid) - self.start


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=selected_modes())
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per async mode, shared by this module's attacks (each checks it is
    still healthy)."""
    server = ServerProcess(Path(tmp_path_factory.mktemp(f"frames-{request.param}")), request.param)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def assert_still_serving(server: ServerProcess) -> None:
    assert server.proc is not None and server.proc.poll() is None, server.log()
    assert requests.get(f"{server.url}/api/health", timeout=5).status_code == 200
    sio = socketio.Client(reconnection=False)
    try:
        sio.connect(server.url, namespaces=["/monitoring"], auth={"token": server.token("after")},
                    transports=["websocket"], wait_timeout=10)
        assert sio.call("join_room", {"room": "monitoring"}, namespace="/monitoring", timeout=10)["ok"]
    finally:
        sio.disconnect()


# -- attacks -----------------------------------------------------------------------------------
def test_100mb_frame_is_closed_before_it_is_buffered(target: ServerProcess) -> None:
    ws = RawWebSocket(target.port)
    try:
        with PeakMemory(target.proc.pid) as peak:
            sent = ws.stream(iter([(OP_TEXT, ATTACK_BYTES, True)]))
            assert ws.closed(), "the server kept the connection open"
        assert sent < ATTACK_BYTES, "the server read the whole 100 MB frame"
    finally:
        ws.close()
    print(f"{target.async_mode}: 100 MB frame: {sent} bytes sent, RSS +{peak.growth_kib} KiB")
    assert peak.growth_kib < MAX_RSS_GROWTH_KIB, f"RSS grew {peak.growth_kib} KiB for one frame"
    assert_still_serving(target)


def test_endless_continuation_frames_are_bounded(target: ServerProcess) -> None:
    """A message fragmented into 64 KiB frames: each frame is small, the message is not."""
    piece = 65536
    frames = [(OP_TEXT, piece, False)] + [(OP_CONTINUATION, piece, False)] * (ATTACK_BYTES // piece)
    ws = RawWebSocket(target.port)
    try:
        with PeakMemory(target.proc.pid) as peak:
            sent = ws.stream(iter(frames))
            assert ws.closed(), "the server kept the connection open"
        assert sent < ATTACK_BYTES
    finally:
        ws.close()
    print(f"{target.async_mode}: fragmented message: {sent} bytes sent, RSS +{peak.growth_kib} KiB")
    assert peak.growth_kib < MAX_RSS_GROWTH_KIB, f"RSS grew {peak.growth_kib} KiB for one message"
    assert_still_serving(target)


def test_compressed_message_is_not_inflated(target: ServerProcess) -> None:
    """A deflate bomb (100 MB of one letter in ~100 KB): compression is not negotiated,
    so the compressed frame is refused as a protocol error instead of being inflated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = b"4" + b"a" * (1 << 20)
    bomb = b"".join(deflate.compress(block) for _ in range(ATTACK_BYTES // len(block))) + deflate.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # permessage-deflate drops the trailing 00 00 ff ff
    ws = RawWebSocket(target.port, offer_deflate=True)
    try:
        assert "permessage-deflate" not in ws.response_headers
        with PeakMemory(target.proc.pid) as peak:
            try:
                ws.send_frame(OP_TEXT, bomb, rsv1=True)
            except OSError:
                pass
            assert ws.closed(), "the server kept the connection open"
    finally:
        ws.close()
    print(f"{target.async_mode}: deflate bomb of {len(bomb)} bytes: RSS +{peak.growth_kib} KiB")
    assert peak.growth_kib < MAX_RSS_GROWTH_KIB, f"RSS grew {peak.growth_kib} KiB for a compressed frame"
    assert_still_serving(target)


def test_frame_over_the_limit_gets_close_code_1009(target: ServerProcess) -> None:
    ws = RawWebSocket(target.port)
    try:
        ws.send_text("4" + "a" * TRANSPORT_FRAME_LIMIT)
        assert ws.close_code() == 1009
    finally:
        ws.close()


def test_message_under_the_limit_still_gets_an_error_ack(target: ServerProcess) -> None:
    """Just under the frame limit an oversized chat message is an ordinary refusal."""
    sio = socketio.Client(reconnection=False)
    sio.connect(target.url, namespaces=["/chat"], auth={"token": target.token("big")},
                transports=["websocket"], wait_timeout=10)
    try:
        message = "x" * (TRANSPORT_FRAME_LIMIT - 1000)
        ack = sio.call("chat_message", {"session_id": "s", "message": message}, namespace="/chat", timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "payload_too_large"
        assert sio.connected
        assert sio.call("typing_indicator", {"session_id": "s"}, namespace="/chat", timeout=10)["ok"]
    finally:
        sio.disconnect()


def test_megabyte_frames_do_not_slow_other_clients(target: ServerProcess) -> None:
    """Five 1 MB messages from one client while others poll ``/api/health``."""
    frame = '42["x","' + "a" * (1_000_000 - 10) + '"]'
    assert len(frame) < TRANSPORT_FRAME_LIMIT
    for _attempt in range(ATTEMPTS):
        ws = RawWebSocket(target.port)
        try:
            with HealthProbe(target.url) as probe:
                wait_for(lambda: len(probe.samples) >= 5, 10, message="no health samples before the attack")
                before = len(probe.samples)
                for _ in range(5):
                    ws.send_text(frame)
                # The server answers this after it has read the five frames before it.
                ws.send_text("40/nowhere,")
                wait_for(lambda: _reply_to_unknown_namespace(ws), 30, interval=0,
                         message="the server did not read the frames")
                wait_for(lambda: len(probe.samples) >= before + 5, 10, message="no health samples after")
        finally:
            ws.close()
        print(f"{target.async_mode}: /api/health during 5 x 1 MB frames: {probe.summary()}")
        if not probe.errors and probe.p99_ms < 100:
            break
    assert not probe.errors, probe.summary()
    assert probe.p99_ms < 100, probe.summary()


def _reply_to_unknown_namespace(ws: RawWebSocket) -> bool:
    _opcode, payload = ws.recv_frame()
    return payload.startswith(b"44/nowhere,")
