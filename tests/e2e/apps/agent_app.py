"""An existing Flask app that adds eventbus in two lines and runs agents in plain threads.

Run: ``python agent_app.py --port PORT --async-mode MODE``. ``POST /agent/run?count=N`` starts an OS-level
(or, once patched, green) thread that sends ``agent_started`` blinker signals, as agent
code does.
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

import os  # noqa: E402
import threading  # noqa: E402

from flask import Flask, request  # noqa: E402

from eventbus import EventBus, signals  # noqa: E402
from eventbus_socketio import SocketManager  # noqa: E402

os.environ["WEBSOCKET_ASYNC_MODE"] = MODE
app = Flask(__name__)
socket_manager = SocketManager(bus=EventBus.from_env())
socket_manager.init_app(app)


def agent(count: int, run: str) -> None:
    for i in range(count):
        signals.agent_started.send("researcher", run=run, step=i)


@app.post("/agent/run")
def run_agent():
    count = int(request.args.get("count", "1"))
    run = request.args.get("run", "r")
    threading.Thread(target=agent, args=(count, run), daemon=True).start()
    return {"started": count}


@app.get("/api/ping")
def ping():
    return {"ok": True}


socket_manager.socketio.run(app, host="127.0.0.1", port=PORT, allow_unsafe_werkzeug=True, log_output=False)
