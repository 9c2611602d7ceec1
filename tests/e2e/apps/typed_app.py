"""An app whose bus has one more plugin: it registers the event type ``deploy_finished``
(category ``ops``, on /monitoring). The live page learns it from ``GET /api/event-types``.

Run: ``python typed_app.py --port PORT --async-mode threading``.
"""

import sys

from flask import Flask

from eventbus import EventBus, hookimpl
from eventbus.events import MONITORING_NAMESPACE, MONITORING_ROOM, EventTypeSpec
from eventbus_socketio import SocketManager

PORT = int(sys.argv[sys.argv.index("--port") + 1])


class Deploys:
    @hookimpl
    def eventbus_register_event_types(self, register):
        register(EventTypeSpec("deploy_finished", "ops", MONITORING_NAMESPACE, MONITORING_ROOM,
                               description="A deployment finished."))


app = Flask(__name__)
socket_manager = SocketManager(bus=EventBus.from_env(plugins=[Deploys()]))
socket_manager.init_app(app)
socket_manager.socketio.run(app, host="127.0.0.1", port=PORT, allow_unsafe_werkzeug=True, log_output=False)
