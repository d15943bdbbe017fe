"""
C{/metrics}: a server's figures in Prometheus' text format, from a
C{prometheus_client} registry of the server's own (L{metrics_registry};
never the process-wide default, so two servers in one process do not
collide). The collector reads the server and its L{Monitor} when scraped:
nothing is counted per message for it.

L{MetricsResource} serves it on the reactor thread. C{prometheus_client}'s
own Twisted resource is a C{WSGIResource}: it collects in the reactor's
thread pool, off the reactor thread, where the server's state must not
be read.

Thread: the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request

from twcomms.web.monitor import (
    LATENCY_BOUNDS,
    Monitor,
    authorized,
    client_view,
    refuse,
)

__all__ = ["MetricsResource", "ServerCollector", "metrics_registry"]

#: The backplane's counters, as counters (the rest of its stats are gauges).
_BACKPLANE_COUNTERS = (
    "published",
    "received",
    "overflowed",
    "refused",
    "replayed",
    "outages",
    "malformed",
    "expired",
    "gaps",
    "missed",
    "duplicates",
    "recovered",
    "skipped",
)


class ServerCollector:
    """
    The figures of one server, collected when scraped.
    """

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        comms = monitor.comms
        connections = GaugeMetricFamily(
            "twcomms_connections",
            "Clients connected now, by transport and protocol.",
            labels=["transport", "protocol"],
        )
        kinds: dict[tuple[str, str], int] = {
            (t, p): 0 for t in ("tcp", "websocket") for p in ("plain", "extended")
        }
        for client in comms.clients:
            if client.registered:
                view = client_view(client, frozenset())
                kinds[view["transport"], view["protocol"]] += 1
        for (transport, protocol), count in kinds.items():
            connections.add_metric([transport, protocol], count)
        yield connections
        m_in, b_in, m_out, b_out = comms.totals()
        for name, value, doc in (
            ("twcomms_messages_received", m_in, "Messages received from clients."),
            ("twcomms_bytes_received", b_in, "Payload bytes received from clients."),
            ("twcomms_messages_sent", m_out, "Messages sent to clients."),
            ("twcomms_bytes_sent", b_out, "Payload bytes sent to clients."),
            ("twcomms_rejected", comms.rejected, "Connections refused (max_clients)."),
            ("twcomms_decode_errors", monitor.decode_errors, "Frames not decoded."),
            (
                "twcomms_slow_consumers",
                monitor.closes.get("slow consumer", 0),
                "Clients closed as slow consumers.",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        closes = CounterMetricFamily(
            "twcomms_closes", "Connections closed, by close reason.", labels=["reason"]
        )
        for reason, count in sorted(monitor.closes.items()):
            closes.add_metric([reason], count)
        yield closes
        yield GaugeMetricFamily(
            "twcomms_rooms", "Rooms with members.", value=len(comms.rooms())
        )
        requests = CounterMetricFamily(
            "twcomms_requests",
            "Requests from clients answered, by outcome.",
            labels=["outcome"],
        )
        for outcome in ("ok", "error"):
            requests.add_metric([outcome], monitor.requests.get(outcome, 0))
        yield requests
        buckets = []
        running = 0
        for bound, count in zip(
            (*LATENCY_BOUNDS, float("inf")), monitor.latency, strict=True
        ):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        yield HistogramMetricFamily(
            "twcomms_request_seconds",
            "Seconds from a request's arrival to its answer.",
            buckets=buckets,
            sum_value=monitor.latency_sum,
        )
        registry = comms.clients
        if hasattr(registry, "counters"):
            yield from _backplane(registry)


def _backplane(registry: Any) -> Iterator[Metric]:
    stats = registry.stats()
    yield GaugeMetricFamily(
        "twcomms_backplane_up",
        "Whether the backplane's broker (Redis) is connected.",
        value=1 if registry.linked else 0,
    )
    yield GaugeMetricFamily(
        "twcomms_backplane_waiting",
        "Messages waiting for the broker's confirmation (the backplane's lag).",
        value=stats.get("kept", 0),
    )
    for name in _BACKPLANE_COUNTERS:
        if name in stats:
            yield CounterMetricFamily(
                f"twcomms_backplane_{name}",
                f"The backplane's {name} count (docs/scaling.md).",
                value=stats[name],
            )


def metrics_registry(monitor: Monitor) -> CollectorRegistry:
    """
    A registry of the server's own, holding its collector.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(monitor))
    return registry


class MetricsResource(Resource):
    """
    C{/metrics}, rendered on the reactor thread.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, token: str | None) -> None:
        super().__init__()
        self.registry = registry
        self.token = token

    def render_GET(self, request: Request) -> bytes:
        if not authorized(self.token, request.getHeader("authorization"), request.uri):
            return refuse(request)
        request.setHeader("content-type", CONTENT_TYPE_LATEST)
        return generate_latest(self.registry)
