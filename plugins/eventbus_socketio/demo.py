"""Simulated agents for ``eventbus serve --demo`` and ``eventbus demo --url URL``.

A planner, a researcher and a writer answer questions in chat session ``demo``: handoffs,
tool calls with latency and occasional failures, typing indicators and a reply, while a
monitor reports health, performance and the odd alert. In the server they emit blinker
signals like real agents; ``eventbus demo`` publishes the same events over HTTP. Both
answer what people type in the chat.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import click

from eventbus import signals

if TYPE_CHECKING:
    from eventbus.bus import EventBus

log = logging.getLogger("eventbus.demo")

SESSION_ID = "demo"
#: The simulated visitor whose questions start each round; the agents answer everyone else.
DEMO_VISITOR = "demo-visitor"
QUESTIONS = (
    "Which of our regions had the highest churn last quarter, and why?",
    "Summarise the open incidents for the payments service.",
    "What changed in the latest release of the search ranking model?",
    "Compare the three vector databases we evaluated for cost and latency.",
    "Draft a status update for the on-call handover.",
    "Why did the nightly ETL job run twice as long yesterday?",
)
#: agent -> tools it uses: (tool, typical latency in ms, chance of failure)
TOOLS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "planner": (("decompose_task", 90, 0.0),),
    "researcher": (("web_search", 420, 0.12), ("vector_search", 140, 0.05), ("fetch_page", 650, 0.15),
                   ("sql_query", 260, 0.08)),
    "writer": (("outline", 180, 0.0), ("draft_answer", 900, 0.03)),
}
COMPONENTS = ("llm-gateway", "vector-store", "search-api", "tool-runner")
ALERTS = (
    ("warning", "search-api p95 latency above 1 s for 2 minutes"),
    ("warning", "tool fetch_page failed 3 times in a row"),
    ("critical", "llm-gateway error rate at 7 % (threshold 5 %)"),
    ("info", "vector-store index rebuilt (12 840 documents)"),
)
FAILURES = ("timeout after 2 s", "HTTP 503 from upstream", "rate limited (429)")


class Publish(Protocol):
    def __call__(self, event_type: str, source: str, *, session_id: str | None = None,
                 user_id: str | None = None, **data: Any) -> None: ...


def publish_signal(event_type: str, source: str, *, session_id: str | None = None,
                   user_id: str | None = None, **data: Any) -> None:
    """Emit like an agent: a blinker signal whose sender is the agent's name."""
    envelope: dict[str, Any] = {k: v for k, v in (("session_id", session_id), ("user_id", user_id)) if v is not None}
    signals.signal(event_type).send(source, **envelope, **data)


class HttpPublisher:
    """POST /api/events with a Bearer token; counts what it sent."""

    def __init__(self, url: str, token: str, timeout: float = 10.0):
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.sent = 0
        self._lock = threading.Lock()

    def __call__(self, event_type: str, source: str, *, session_id: str | None = None,
                 user_id: str | None = None, **data: Any) -> None:
        import requests

        body: dict[str, Any] = {"type": event_type, "data": data}
        if session_id is not None:
            body["session_id"] = session_id
        if user_id is not None:
            body["user_id"] = user_id
        try:
            response = self.session.post(f"{self.url}/api/events", json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.url}: {exc}") from None
        if response.status_code != 202:
            try:
                error = response.json().get("error", {})
            except ValueError:
                error = {"code": response.status_code, "message": response.text[:200]}
            raise click.ClickException(f"{event_type} refused: {response.status_code} "
                                       f"{error.get('code')}: {error.get('message')}")
        with self._lock:
            self.sent += 1


class DemoAgents:
    """The simulated workflow. ``pace`` scales every delay (0.05 in tests); ``wait(seconds)``
    sleeps and returns True when the demo should stop."""

    def __init__(self, publish: Publish, wait: Callable[[float], bool], *, pace: float = 1.0,
                 session_id: str = SESSION_ID, rng: random.Random | None = None):
        self.publish = publish
        self.pace = pace
        self.session_id = session_id
        self.rng = rng or random.Random()
        self._wait = wait
        self._lock = threading.Lock()
        self.rounds = 0
        self.answers = 0
        self._metrics = {"latency_ms": 220.0, "events_per_s": 14.0, "tokens_per_s": 48.0,
                         "queue_depth": 2.0, "cpu_percent": 35.0}

    def wait(self, seconds: float) -> bool:
        return self._wait(max(0.0, seconds * self.pace))

    # -- one question, answered by three agents ------------------------------------------
    def round(self) -> bool:
        """A visitor asks a question in the demo session and the agents answer it.
        Returns False when stopped."""
        question = self.rng.choice(QUESTIONS)
        self.publish("chat_message", DEMO_VISITOR, session_id=self.session_id, user_id=DEMO_VISITOR,
                     message=question)
        self.rounds += 1
        return self.answer(self.session_id, question, research=True)

    def answer(self, session_id: str, question: str, research: bool = True) -> bool:
        """Plan, research (with tool calls), write, and reply with ``chat_response``."""
        rng = self.rng
        topic = question.strip().rstrip("?.!")
        short = topic if len(topic) <= 60 else topic[:57] + "…"
        started = time.monotonic()
        if self.wait(0.4):
            return False
        self.publish("agent_started", "planner", session_id=session_id, agent_name="planner",
                     task=f"plan: {short}")
        if not self._tool("planner", session_id) or self.wait(0.3):
            return False
        nxt = "researcher" if research else "writer"
        self.publish("agent_handoff", "planner", session_id=session_id, from_agent="planner", to_agent=nxt,
                     reason="needs sources and figures" if research else "simple answer, no lookup needed")
        self._completed("planner", session_id, started, "ok")
        sources = 0
        if research:
            started = time.monotonic()
            self.publish("agent_started", "researcher", session_id=session_id, agent_name="researcher",
                         task=f"gather evidence: {short}")
            for tool in rng.sample(TOOLS["researcher"], k=rng.randint(2, 3)):
                ok = self._tool("researcher", session_id, tool)
                if ok is None:
                    return False
                if ok is False:
                    self.wait(0.2)  # retry once, as a real agent would
                    ok = self._tool("researcher", session_id, tool, may_fail=False)
                    if ok is None:
                        return False
                sources += rng.randint(1, 4)
            self.publish("agent_handoff", "researcher", session_id=session_id, from_agent="researcher",
                         to_agent="writer", reason=f"{sources} sources ready")
            self._completed("researcher", session_id, started, "ok")
        started = time.monotonic()
        self.publish("agent_started", "writer", session_id=session_id, agent_name="writer",
                     task="compose the answer")
        self.publish("typing_indicator", "writer", session_id=session_id, typing=True, user="writer")
        for tool in TOOLS["writer"]:
            if self._tool("writer", session_id, tool, may_fail=False) is None:
                return False
        reply = self._reply(short, sources)
        self.publish("chat_response", "writer", session_id=session_id, message=reply, agent="writer")
        self.publish("typing_indicator", "writer", session_id=session_id, typing=False, user="writer")
        self._completed("writer", session_id, started, "ok")
        with self._lock:
            self.answers += 1
        return True

    def _tool(self, agent: str, session_id: str, tool: tuple[str, float, float] | None = None,
              may_fail: bool = True) -> bool | None:
        """Run a tool; True on success, False on failure, None when stopped."""
        name, typical, failure_rate = tool or self.rng.choice(TOOLS[agent])
        duration = max(15.0, self.rng.gauss(typical, typical * 0.35))
        if self.wait(duration / 1000):
            return None
        ok = not (may_fail and self.rng.random() < failure_rate)
        data: dict[str, Any] = {"agent_name": agent, "tool": name, "duration_ms": round(duration, 1), "ok": ok}
        if not ok:
            data["error"] = self.rng.choice(FAILURES)
        self.publish("tool_executed", agent, session_id=session_id, **data)
        return ok

    def _completed(self, agent: str, session_id: str, started: float, status: str) -> None:
        self.publish("agent_completed", agent, session_id=session_id, agent_name=agent, status=status,
                     duration_ms=round((time.monotonic() - started) * 1000, 1))

    def _reply(self, topic: str, sources: int) -> str:
        finding = self.rng.choice((
            "the main driver is a change in the input data, not the code",
            "two of the three signals point the same way; the third is noise",
            "the numbers are within the usual range except for one outlier week",
            "the fastest option is also the cheapest at our current volume",
        ))
        cited = f" I checked {sources} sources." if sources else ""
        return f"On “{topic}”: {finding}.{cited} Ask me to dig into any part of it."

    # -- the monitor --------------------------------------------------------------------
    def tick(self) -> None:
        """One sample of performance, one component's health, and sometimes an alert."""
        rng = self.rng
        m = self._metrics
        m["latency_ms"] = _walk(rng, m["latency_ms"], 25, 60, 1400)
        m["events_per_s"] = _walk(rng, m["events_per_s"], 2.5, 0, 80)
        m["tokens_per_s"] = _walk(rng, m["tokens_per_s"], 6, 5, 160)
        m["queue_depth"] = round(_walk(rng, m["queue_depth"], 1.5, 0, 40))
        m["cpu_percent"] = _walk(rng, m["cpu_percent"], 4, 3, 98)
        self.publish("performance_update", "monitor",
                     metrics={k: round(v, 1) if isinstance(v, float) else v for k, v in m.items()})
        component = rng.choice(COMPONENTS)
        roll = rng.random()
        status = "down" if roll < 0.03 else "degraded" if roll < 0.15 else "ok"
        self.publish("health_update", "monitor", component=component, status=status,
                     latency_ms=round(rng.uniform(8, 120) * (4 if status != "ok" else 1), 1))
        if rng.random() < 0.12 or status == "down":
            severity, message = rng.choice(ALERTS)
            if status == "down":
                severity, message = "critical", f"{component} is down"
            self.publish("alert_created", "monitor", severity=severity, message=message)


def _walk(rng: random.Random, value: float, step: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, value + rng.gauss(0, step)))


class DemoRunner:
    """The demo inside a server: the workflow loop, the monitor loop, and answers to real
    chat messages, each a background task of the server's async mode. Stops when the bus
    closes or on :meth:`stop`."""

    def __init__(self, bus: EventBus, spawn: Callable[..., Any], *, pace: float = 1.0,
                 rounds: int | None = None, tick_every: float = 1.5, round_every: float = 4.0,
                 rng: random.Random | None = None):
        self.bus = bus
        self.spawn = spawn
        self.rounds = rounds
        self.tick_every = tick_every
        self.round_every = round_every
        self._stop = threading.Event()
        self.agents = DemoAgents(publish_signal, self._sleep, pace=pace, rng=rng)
        self._receiver = self._on_chat_message

    @property
    def stopped(self) -> bool:
        return self._stop.is_set() or _bus_closed(self.bus)

    def _sleep(self, seconds: float) -> bool:
        self._stop.wait(seconds)
        return self.stopped

    def start(self) -> DemoRunner:
        signals.chat_message.connect(self._receiver, weak=False)
        self.spawn(self._workflow_loop)
        self.spawn(self._monitor_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        signals.chat_message.disconnect(self._receiver)

    def _workflow_loop(self) -> None:
        try:
            done = 0
            while not self.stopped and (self.rounds is None or done < self.rounds):
                if not self.agents.round():
                    break
                done += 1
                if self.agents.wait(self.round_every):
                    break
        except Exception:  # a demo bug must not take the server down
            log.exception("demo workflow failed")

    def _monitor_loop(self) -> None:
        try:
            while not self.stopped:
                self.agents.tick()
                if self.agents.wait(self.tick_every):
                    break
        except Exception:
            log.exception("demo monitor failed")
        finally:
            self.stop()

    def _on_chat_message(self, sender: Any, event: Any = None, **kwargs: Any) -> None:
        # Only messages from clients and HTTP arrive with ``event=``; the demo's own
        # visitor speaks through the signal directly and gets answered by the round.
        if event is None or self.stopped or event.user_id == DEMO_VISITOR:
            return
        message = (event.data or {}).get("message")
        if not isinstance(message, str) or not event.session_id:
            return
        self.spawn(self._answer, event.session_id, message)

    def _answer(self, session_id: str, message: str) -> None:
        try:
            self.agents.answer(session_id, message, research=len(message) > 40)
        except Exception:
            log.exception("demo answer in session %s failed", session_id)


def _pace_from_env(manager: Any) -> float:
    raw = manager.bus.config.env.get("EVENTBUS_DEMO_PACE") or os.environ.get("EVENTBUS_DEMO_PACE")
    if not raw:
        return 1.0
    try:
        pace = float(raw)
    except ValueError:
        pace = -1.0
    if pace < 0:
        raise click.ClickException(f"EVENTBUS_DEMO_PACE: expected a number >= 0, got {raw!r}")
    return pace


def _bus_closed(bus: Any) -> bool:
    closed = getattr(bus, "closed", None)
    if isinstance(closed, bool):
        return closed
    return bool(getattr(bus, "_closed", False))


def _spawn_thread(target: Callable[..., Any], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name="eventbus-demo", daemon=True)
    thread.start()
    return thread


def start_demo(manager: Any, *, pace: float | None = None, **options: Any) -> DemoRunner:
    """Run the demo agents in the server's process until its bus closes.

    Uses the server's ``start_background_task`` (so gevent and eventlet get greenlets), or
    daemon threads when Socket.IO is off. ``pace`` scales every delay; by default it comes
    from ``EVENTBUS_DEMO_PACE`` (1.0).
    """
    if pace is None:
        pace = _pace_from_env(manager)
    socketio = getattr(manager, "socketio", None)
    spawn = socketio.start_background_task if socketio is not None else _spawn_thread
    runner = DemoRunner(manager.bus, spawn, pace=pace, **options)
    log.info("demo agents started: session %r, pace %s", SESSION_ID, pace)
    return runner.start()


# -- eventbus demo --url URL ----------------------------------------------------------------

class _ChatListener:
    """A /chat client in the demo session that hands each message from a person to ``on_message``."""

    def __init__(self, url: str, token: str, session_id: str, on_message: Callable[[str, str], None]):
        import socketio

        self.client = socketio.Client(reconnection=True)
        self.session_id = session_id

        def on_chat(envelope: dict[str, Any]) -> None:
            if isinstance(envelope, dict) and envelope.get("user_id") != DEMO_VISITOR:
                message = (envelope.get("data") or {}).get("message")
                if isinstance(message, str) and envelope.get("session_id"):
                    on_message(envelope["session_id"], message)

        def on_connect() -> None:
            self.client.emit("join_room", {"room": f"session:{session_id}"}, namespace="/chat")

        self.client.on("chat_message", on_chat, namespace="/chat")
        self.client.on("connect", on_connect, namespace="/chat")
        try:
            self.client.connect(url, namespaces=["/chat"], auth={"token": token}, wait_timeout=10)
        except socketio.exceptions.ConnectionError as exc:
            raise click.ClickException(f"cannot connect to {url}/chat: {exc}") from None

    def close(self) -> None:
        self.client.disconnect()


@click.command("demo")
@click.option("--url", default=None, help="Server URL (default http://127.0.0.1:EVENTBUS_PORT).")
@click.option("--token", default=None,
              help="Bearer token with roles publisher and agent (EVENTBUS_TOKEN; default: a local one).")
@click.option("--rounds", type=click.IntRange(min=0), default=0, show_default=True,
              help="Questions to answer before exiting (0: run until Ctrl-C).")
@click.option("--pace", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Scale every delay (0.1 runs ten times faster).")
@click.option("--session-id", default=SESSION_ID, show_default=True, help="Chat session the agents answer in.")
@click.option("--no-chat", is_flag=True, help="Do not answer chat messages typed in the session.")
def demo_command(url: str | None, token: str | None, rounds: int, pace: float, session_id: str,
                 no_chat: bool) -> None:
    """Run simulated agents against a running server (POST /api/events).

    To run them inside the server instead: eventbus serve --demo.
    """
    from .commands import _default_token

    state = click.get_current_context().obj
    config = state.config
    base = (url or f"http://127.0.0.1:{config.port}").rstrip("/")
    # agent: the demo speaks for its visitor and answers in every session it is asked in.
    bearer = _default_token(config, token, ["publisher", "agent"])
    publisher = HttpPublisher(base, bearer)
    stop = threading.Event()
    errors: list[BaseException] = []

    def wait(seconds: float) -> bool:
        stop.wait(seconds)
        return stop.is_set()

    agents = DemoAgents(publisher, wait, pace=pace, session_id=session_id)

    def guarded(target: Callable[..., Any], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                stop.set()
        return run

    def monitor() -> None:
        while not stop.is_set():
            agents.tick()
            wait(1.5)

    listener = None
    if not no_chat:
        listener = _ChatListener(base, bearer, session_id, lambda sid, msg: threading.Thread(
            target=guarded(agents.answer, sid, msg, len(msg) > 40), daemon=True).start())
    threading.Thread(target=guarded(monitor), name="eventbus-demo-monitor", daemon=True).start()
    click.echo(f"demo agents publishing to {base} in session {session_id!r}"
               f"{'' if no_chat else ' (answering chat)'}; Ctrl-C to stop", err=True)
    done = 0
    try:
        while not stop.is_set() and (rounds == 0 or done < rounds):
            guarded(agents.round)()
            done += 1
            if rounds == 0 or done < rounds:
                wait(4.0 * pace)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if listener is not None:
            listener.close()
    if errors:
        error = errors[0]
        if isinstance(error, click.ClickException):
            raise error
        raise click.ClickException(f"demo failed: {type(error).__name__}: {error}")
    click.echo(json.dumps({"rounds": agents.rounds, "answers": agents.answers, "published": publisher.sent}))
