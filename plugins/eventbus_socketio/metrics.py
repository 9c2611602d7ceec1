"""Prometheus exposition of the bus and the server, collected at scrape time.

Nothing is counted twice: the collector reads the counters the bus, the workers and the
manager already keep, so the per-event path pays nothing for metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from eventbus.transport import LATENCY_BUCKETS

if TYPE_CHECKING:
    from .manager import SocketManager

_HEALTH = {"ok": 1.0, "idle": 1.0, "degraded": 0.5, "down": 0.0}


class EventBusCollector:
    def __init__(self, manager: SocketManager):
        self.manager = manager

    def collect(self) -> Iterator[Any]:
        manager = self.manager
        bus = manager._bus

        conns = GaugeMetricFamily("eventbus_connections", "Connected Socket.IO clients", labels=["namespace"])
        for namespace, count in manager.namespace_counts().items():
            conns.add_metric([namespace], count)
        yield conns

        events = CounterMetricFamily("eventbus_events", "Events accepted by the bus", labels=["type"])
        for event_type, count in sorted(bus.type_counts.items()):
            events.add_metric([event_type], count)
        yield events

        bus_counters = CounterMetricFamily("eventbus_bus", "Bus outcomes", labels=["outcome"])
        for name, value in bus.counters.items():
            bus_counters.add_metric([name], value)
        yield bus_counters

        families = {
            name: CounterMetricFamily(f"eventbus_transport_{name}", help_, labels=["transport"])
            for name, help_ in (("submitted", "Events queued for a transport"),
                                ("delivered", "Events a transport delivered"),
                                ("failed", "Events a transport failed to deliver"),
                                ("dropped", "Events dropped from a transport's queue"))
        }
        depth = GaugeMetricFamily("eventbus_transport_queue_depth", "Events waiting", labels=["transport"])
        up = GaugeMetricFamily("eventbus_transport_health", "1 ok, 0.5 degraded, 0 down", labels=["transport"])
        stat = GaugeMetricFamily("eventbus_transport_stat", "Numeric health figures of a transport",
                                 labels=["transport", "stat"])
        endpoint = GaugeMetricFamily("eventbus_transport_endpoint_stat",
                                     "Numeric health figures per endpoint (webhooks)",
                                     labels=["transport", "endpoint", "stat"])
        latency = HistogramMetricFamily("eventbus_delivery_latency_seconds",
                                        "From emit to hand-off by the transport", labels=["transport"])
        for worker in bus.workers:
            stats = worker.stats
            for name, family in families.items():
                family.add_metric([worker.name], getattr(stats, name))
            depth.add_metric([worker.name], worker.depth)
            try:
                health = worker.transport.health()
            except Exception:  # noqa: BLE001
                health = {"status": "down"}
            up.add_metric([worker.name], _HEALTH.get(str(health.get("status")), 0.0))
            for key, value in health.items():
                if _number(value):
                    stat.add_metric([worker.name, key], float(value))
            for ep_name, ep in (health.get("endpoints") or {}).items():
                for key, value in (ep or {}).items():
                    if _number(value):
                        endpoint.add_metric([worker.name, str(ep_name), key], float(value))
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), stats.buckets):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            latency.add_metric([worker.name], buckets, stats.latency_sum)
        yield from families.values()
        yield from (depth, up, stat, endpoint, latency)

        refusals = CounterMetricFamily("eventbus_refusals", "Client and HTTP requests refused", labels=["code"])
        for code, count in sorted(manager.refusals.items()):
            refusals.add_metric([code], count)
        yield refusals

        yield from _limit_metrics(manager)

        server = CounterMetricFamily("eventbus_server", "Server counters", labels=["counter"])
        for name, value in sorted(manager.counters.items()):
            server.add_metric([name], value)
        yield server
        redis = bus.redis
        if redis is not None:
            up_redis = GaugeMetricFamily("eventbus_redis_up", "1 when Redis answers, 0 while degraded")
            up_redis.add_metric([], 1.0 if redis.state == "ok" else 0.0)
            yield up_redis
            buffered = GaugeMetricFamily("eventbus_redis_buffered", "Events waiting for Redis")
            buffered.add_metric([], len(redis.pending))
            yield buffered
            held = GaugeMetricFamily("eventbus_redis_ingest_partitions", "Ingest partitions this server consumes")
            held.add_metric([], len(redis.owned))
            yield held
            # Every outcome, drops, retries, duplicates and refusals included.
            redis_counters = CounterMetricFamily("eventbus_redis", "Redis stream outcomes", labels=["outcome"])
            for name, value in sorted(redis.counters.items()):
                redis_counters.add_metric([name], value)
            yield redis_counters
        auth = CounterMetricFamily("eventbus_auth_failures", "Refused Socket.IO and HTTP authentications")
        auth.add_metric([], manager.counters.get("auth_failures", 0) + manager.counters.get("http_auth_failures", 0))
        yield auth


def _limit_metrics(manager: SocketManager) -> Iterator[Any]:
    """What clients hold against the limits: rooms, memberships, pending Engine.IO sessions
    and the retained history (with the rooms it forgot)."""
    members = manager.room_members()
    rooms = GaugeMetricFamily("eventbus_rooms", "Rooms with at least one connection")
    rooms.add_metric([], len(members))
    yield rooms
    memberships = GaugeMetricFamily("eventbus_room_memberships", "Connections in rooms, summed over rooms")
    memberships.add_metric([], sum(members.values()))
    yield memberships
    if manager.pending_sessions is not None:
        pending = GaugeMetricFamily("eventbus_pending_sessions",
                                    "Engine.IO sessions not yet signed in to a namespace")
        pending.add_metric([], len(manager.pending_sessions))
        yield pending
    stats = getattr(manager._bus.history, "stats", None)
    if callable(stats):
        figures = stats()
        retained = GaugeMetricFamily("eventbus_history_retained", "Retained history", labels=["what"])
        retained.add_metric(["rooms"], figures["rooms"])
        retained.add_metric(["events"], figures["events"])
        yield retained
        evicted = CounterMetricFamily("eventbus_history_evicted_rooms",
                                      "Rooms the history forgot, by reason (age, budget)", labels=["reason"])
        for reason, count in sorted(figures["evicted_rooms"].items()):
            evicted.add_metric([reason], count)
        yield evicted


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def render_metrics(manager: SocketManager) -> tuple[bytes, str]:
    registry = getattr(manager, "_metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(EventBusCollector(manager))
        manager._metrics_registry = registry  # type: ignore[attr-defined]
    return generate_latest(registry), CONTENT_TYPE_LATEST
