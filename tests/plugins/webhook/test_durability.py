"""Crash safety: a process killed with SIGKILL while deliveries wait for retries loses none;
the next process delivers every one of them."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

CHILD = textwrap.dedent('''
    import json, sys, threading
    import eventbus_webhook
    from eventbus import Config, EventBus
    from eventbus.testing import wait_until

    mode, data_dir, url, secret, count = sys.argv[1:6]
    config = Config(data_dir=data_dir, plugins={"webhook": {"jitter": 0}}, webhooks=[{
        "name": "receiver", "url": url, "secret": secret, "retry_schedule": [0] + [0.2] * 50}])
    bus = EventBus(config, plugins=[eventbus_webhook], load_entrypoints=False, connect_signals=False)
    bus.start()
    health = bus.transport("webhook").health
    if mode == "emit":
        ids = [bus.emit("agent_started", {"agent_name": "a", "i": i}).id for i in range(int(count))]
        print(json.dumps(ids), flush=True)
        # Every event is in the outbox and has failed at least once: we are mid-retry.
        wait_until(lambda: health()["pending"] == len(ids) and health()["failures"] >= len(ids), timeout=30)
    print("READY", flush=True)
    threading.Event().wait()  # until killed
''')


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"child printed nothing in {timeout}s")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"child exited with {proc.wait(5)}: {proc.stderr.read()}")
    return line.strip()


@pytest.fixture
def spawn(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_sigkill_mid_retry_loses_nothing(spawn, tmp_path, free_port, secret, receiver_factory):
    url = f"http://127.0.0.1:{free_port}/hook"
    data_dir = str(tmp_path / "data")
    first = spawn("emit", data_dir, url, secret, "50")
    ids = json.loads(read_line(first, 30))
    assert read_line(first, 30) == "READY"
    first.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL

    receiver = receiver_factory(secret, port=free_port)  # the receiver comes back
    second = spawn("resume", data_dir, url, secret, "0")
    assert read_line(second, 30) == "READY"
    receiver.wait_for_ids(ids, timeout=20)
    assert receiver.ids() == set(ids) and receiver.invalid == 0
