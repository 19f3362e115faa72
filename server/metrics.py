"""Prometheus metrics of one server process, served on `--metrics-listen`.

Counters and histograms are updated where things happen (no gRPC or SQL here); the agents
gauge and the records-by-state gauge are read when Prometheus scrapes, on the metrics HTTP
server's own thread, never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloudassist.server.domain.status import ExecutionState

log = logging.getLogger(__name__)

# Seconds: from sub-millisecond (loopback) to the tens of seconds a congested fleet can take.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _RecordsByState(Collector):
    """`cloudassist_records{state}`: records in the database in each state (every server
    sharing the database reports the same figures)."""

    def __init__(self, count: Callable[[], dict[str, int]]) -> None:
        self._count = count

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "cloudassist_records", "Execution records in the database, by state", labels=["state"]
        )
        try:
            counts = self._count()
        except Exception:  # the database is down: say nothing rather than fail the scrape
            log.warning("counting records by state failed", exc_info=True)
            return
        for state in ExecutionState:
            family.add_metric([state.value], counts.get(state.value, 0))
        yield family


class _Transactions(Collector):
    """`cloudassist_db_transactions_total{kind}`: database transactions this process began."""

    def __init__(self, counts: dict[str, int]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "cloudassist_db_transactions",
            "Database transactions begun by this server, by kind (write, read)",
            labels=["kind"],
        )
        for kind, count in sorted(self._counts.items()):
            family.add_metric([kind], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.agents_connected = Gauge(
            "cloudassist_agents_connected", "Agent streams open on this server", registry=r
        )
        self.rpcs = Counter(
            "cloudassist_rpcs",
            "RPCs handled, by full method name and final status code",
            ["method", "code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "cloudassist_rpc_duration_seconds",
            "Time to answer a unary RPC",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dispatch_seconds = Histogram(
            "cloudassist_dispatch_latency_seconds",
            "From a task written to its agent's stream to the agent accepting it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.output_bytes = Counter(
            "cloudassist_output_bytes", "Output bytes received from agents", registry=r
        )
        self.db_flush_seconds = Histogram(
            "cloudassist_db_flush_seconds",
            "Time to commit one batch of agent reports",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_reports = Counter(
            "cloudassist_agent_reports", "Agent reports committed to the database", registry=r
        )
        self.agent_messages = Counter(
            "cloudassist_agent_messages",
            "Messages on agent streams, by direction (in: from agents) and kind",
            ["direction", "kind"],
            registry=r,
        )
        # Bound once: looking a label set up costs more than the increment itself.
        self._agent_message_children: dict[tuple[str, str], Counter] = {}
        self.health_serving = Gauge(
            "cloudassist_serving", "1 while the health service says SERVING, else 0", registry=r
        )

    def agent_message(self, direction: str, kind: str) -> None:
        child = self._agent_message_children.get((direction, kind))
        if child is None:
            child = self.agent_messages.labels(direction, kind)
            self._agent_message_children[(direction, kind)] = child
        child.inc()

    def count_agents_with(self, count: Callable[[], int]) -> None:
        self.agents_connected.set_function(count)

    def count_records_with(self, count: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_RecordsByState(count))

    def count_transactions_in(self, counts: dict[str, int]) -> None:
        self.registry.register(_Transactions(counts))

    def serve(self, address: str) -> tuple[WSGIServer, Thread, int]:
        """Serves /metrics on `address` (host:port; port 0 picks one); returns the port."""
        host, _, port = address.rpartition(":")
        server, thread = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        return server, thread, server.server_port
