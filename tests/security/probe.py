"""Measure what an attack costs the server: resident memory and other clients' latency."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class HealthProbe:
    """Polls ``/api/health`` on a fresh connection every ``interval`` seconds while the
    ``with`` block runs, as an innocent client would; :attr:`p99_ms` and :attr:`errors`
    tell what the attack did to it."""

    def __init__(self, url: str, interval: float = 0.02, timeout: float = 5.0):
        self.url = f"{url}/api/health"
        self.interval = interval
        self.timeout = timeout
        self.samples: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                requests.get(self.url, timeout=self.timeout)
                self.samples.append((time.perf_counter() - start) * 1000)
            except requests.RequestException as exc:
                self.errors.append(type(exc).__name__)
            self._stop.wait(self.interval)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def percentile(self, p: float) -> float:
        if not self.samples:
            return float("inf")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    def summary(self) -> str:
        return (f"{len(self.samples)} samples, p50 {self.percentile(50):.1f} ms, "
                f"p99 {self.p99_ms:.1f} ms, max {max(self.samples, default=0):.1f} ms, "
                f"errors {self.errors[:5]}")


#: Attempts of a latency measurement. This machine is shared: one scheduling stall of the
#: test's own processes can put a single sample over a limit, so an attempt over it is made
#: again. A server that stalls under the attack (the defect: about a second per request)
#: fails every attempt.
ATTEMPTS = 3


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05, message: str = "") -> Any:
    """Poll ``predicate()`` until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)
