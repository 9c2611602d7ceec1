"""Webhook deliveries per second to local receivers that verify every signature with the
official ``standardwebhooks`` library, through the durable outbox."""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any


def run(events: int, endpoints: int = 1, concurrency: int = 4) -> dict[str, Any]:
    """Emit ``events`` events to ``endpoints`` receivers and wait until all are delivered.

    Returns ``{"events", "endpoints", "deliveries", "seconds", "deliveries_per_s",
    "emit_per_s", "p50_ms", "p99_ms"}``; latency is emit to acceptance by the receiver.
    """
    import eventbus_webhook
    from eventbus import Config, EventBus
    from eventbus_webhook.testing import WebhookReceiver

    secret = eventbus_webhook.generate_secret()
    receivers = [WebhookReceiver(secret).start() for _ in range(endpoints)]
    try:
        with tempfile.TemporaryDirectory(prefix="eventbus-webhook-bench-") as data_dir:
            config = Config(data_dir=data_dir, queue_size=max(10000, events), webhooks=[
                {"name": f"bench{i}", "url": r.url, "secret": secret, "concurrency": concurrency}
                for i, r in enumerate(receivers)])
            bus = EventBus(config, plugins=[eventbus_webhook], load_entrypoints=False, connect_signals=False)
            bus.start()
            try:
                started = time.perf_counter()
                sent = {}
                for i in range(events):
                    event = bus.emit("tool_executed", {"tool": "search", "i": i})
                    sent[event.id] = event.created
                emitted = time.perf_counter() - started
                for receiver in receivers:
                    receiver.wait_for_ids(sent, timeout=max(60.0, events / 50))
                seconds = time.perf_counter() - started
            finally:
                bus.close()
        latencies = sorted(r["received_at"] - sent[r["id"]] for rc in receivers for r in rc.accepted)
        invalid = sum(r.invalid for r in receivers)
    finally:
        for receiver in receivers:
            receiver.stop()
    if invalid:
        raise RuntimeError(f"{invalid} deliveries failed signature verification")
    deliveries = events * endpoints

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    return {"events": events, "endpoints": endpoints, "deliveries": deliveries,
            "seconds": round(seconds, 3), "deliveries_per_s": round(deliveries / seconds, 1),
            "emit_per_s": round(events / emitted, 1), "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


COLUMNS = ("events", "endpoints", "deliveries", "seconds", "deliveries_per_s", "emit_per_s", "p50_ms", "p99_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4, help="delivery threads per endpoint")
    parser.add_argument("--no-header", action="store_true", help="print the row only")
    args = parser.parse_args()
    result = run(args.events, args.endpoints, args.concurrency)
    if not args.no_header:
        print("| transport | " + " | ".join(COLUMNS) + " |")
        print("|---" * (len(COLUMNS) + 1) + "|")
    print("| webhook | " + " | ".join(str(result[c]) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
