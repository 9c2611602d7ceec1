"""Baseline: a plain Flask-SocketIO server doing the bench broadcast with no eventbus in the
path, in the same async mode, so the bench reports eventbus's overhead as a ratio.

Clients of ``/monitoring`` join room ``monitoring`` on connect. ``POST /bench/emit`` starts an
agent thread that calls ``socketio.emit`` with an envelope of the same shape and size as
eventbus's; ``POST /api/events`` parses a JSON body and emits it (the HTTP publish baseline).

Run: ``python baseline_flask_socketio.py --port PORT --async-mode MODE``.
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

import itertools  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from flask import Flask, jsonify, request  # noqa: E402
from flask_socketio import SocketIO, join_room  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pacer import paced  # noqa: E402

app = Flask(__name__)
socketio = SocketIO(app, async_mode=MODE, logger=False, engineio_logger=False,
                    ping_interval=25, ping_timeout=20)
seq = itertools.count(1)


@socketio.on("connect", namespace="/monitoring")
def on_connect(auth=None):
    join_room("monitoring")


def envelope(event_type: str, data: dict) -> dict:
    return {"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "data": data,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "room": "monitoring", "seq": next(seq), "user_id": None, "session_id": None,
            "source": "bench-agent"}


def agent(count: int, rate: float, run: str) -> None:
    def send(i: int, due: float) -> None:
        socketio.emit("tool_executed", envelope("tool_executed", {"t": due, "i": i, "r": run}),
                      namespace="/monitoring", to="monitoring")

    paced(count, rate, send)


@app.post("/bench/emit")
def bench_emit():
    count = int(request.args.get("count", "1"))
    rate = float(request.args.get("rate", "1000"))
    threading.Thread(target=agent, args=(count, rate, request.args.get("run", "r")), daemon=True).start()
    return {"started": count}, 202


@app.post("/api/events")
def publish():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return jsonify({"ok": False}), 400
    env = envelope(body["type"], body.get("data") or {})
    socketio.emit(body["type"], env, namespace="/monitoring", to="monitoring")
    return jsonify({"ok": True, "id": env["id"], "seq": env["seq"]}), 202


@app.get("/api/health")
def health():
    return {"status": "ok", "server": "flask-socketio"}


socketio.run(app, host="127.0.0.1", port=PORT, allow_unsafe_werkzeug=True, log_output=False)
