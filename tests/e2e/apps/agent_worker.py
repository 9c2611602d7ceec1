"""An agent in its own process: ``EventBus.from_env()`` with EVENTBUS_REDIS_URL set sends its
events to the servers through the Redis ingest stream.

Run: ``python agent_worker.py COUNT [RATE_PER_S]``; prints ``SENT <n>`` when flushed.
"""

import sys
import time

from eventbus import EventBus, signals

count = int(sys.argv[1])
rate = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
bus = EventBus.from_env()
bus.start()
for i in range(count):
    signals.tool_executed.send("worker-agent", tool="search", i=i)
    if rate:
        time.sleep(1.0 / rate)
ok = bus.close(timeout=30)
print(f"SENT {count} role={bus.role} redis={bus.redis.state if bus.redis else None} ok={ok}", flush=True)
