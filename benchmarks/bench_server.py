"""The eventbus server the bench measures: an app built the way a user builds one (patch
first for gevent/eventlet, then ``SocketManager(bus=EventBus.from_env()).init_app(app)``),
plus ``POST /bench/emit?count=N&rate=R&run=ID``, which starts an in-process agent thread
that sends ``tool_executed`` blinker signals with ``{"t": due time, "i": i, "r": run}``.

Run: ``python bench_server.py --port PORT --async-mode MODE`` (settings from the environment,
e.g. ``EVENTBUS_BATCH_WINDOW_MS`` or ``EVENTBUS_REDIS_URL``).
"""

import sys

PORT = int(sys.argv[sys.argv.index("--port") + 1])
MODE = sys.argv[sys.argv.index("--async-mode") + 1]
if MODE == "gevent":
    from gevent import monkey

    monkey.patch_all()
elif MODE == "eventlet":
    import eventlet

    eventlet.monkey_patch()

import logging  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402

from flask import Flask, request  # noqa: E402

from eventbus import EventBus, signals  # noqa: E402
from eventbus_socketio import SocketManager  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pacer import paced  # noqa: E402

logging.basicConfig(level=logging.WARNING)
os.environ["WEBSOCKET_ASYNC_MODE"] = MODE
app = Flask(__name__)
socket_manager = SocketManager(bus=EventBus.from_env())
socket_manager.init_app(app)


def agent(count: int, rate: float, run: str) -> None:
    send = signals.tool_executed.send
    paced(count, rate, lambda i, due: send("bench-agent", t=due, i=i, r=run))


@app.post("/bench/emit")
def bench_emit():
    count = int(request.args.get("count", "1"))
    rate = float(request.args.get("rate", "1000"))
    run = request.args.get("run", "r")
    threading.Thread(target=agent, args=(count, rate, run), daemon=True).start()
    return {"started": count}, 202


socket_manager.socketio.run(app, host="127.0.0.1", port=PORT, allow_unsafe_werkzeug=True, log_output=False)
