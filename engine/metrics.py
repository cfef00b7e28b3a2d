"""The engine's Prometheus metrics, served over HTTP on `[engine] metrics_port` (0, the default: off).

Almost everything is read at scrape time from what the engine keeps anyway - its decision counts,
its request and batch counts, the store writer's sequence numbers, the kill switch - so the hot
path pays nothing per order. The one thing observed as it happens is each batch's decide time
(one histogram observation per batch, a microsecond or two, only when metrics are on).

The exporter is prometheus-client's own HTTP server on a daemon thread: a scrape holds the GIL
for the millisecond or so it takes to render, every scrape interval, not per order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from engine.server import Server

DECISION_STATUSES = ("FILLED", "FAILED", "REJECTED", "ESCALATED")
BATCH_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class EngineCollector(Collector):
    """Reads a running `Server` at scrape time."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        srv = self.server
        eng = srv.engine
        stats = dict(eng.stats)  # one C-level copy: consistent while the loop counts on
        decisions = CounterMetricFamily("wojak_engine_decisions", "Orders decided, by status (duplicates not "
                                        "counted again)", labels=["status"])
        for status in DECISION_STATUSES:
            decisions.add_metric([status], stats.get(status, 0))
        yield decisions
        yield CounterMetricFamily("wojak_engine_duplicates", "Orders answered with their earlier decision "
                                  "(a redelivery)", value=stats.get("duplicate", 0))
        yield CounterMetricFamily("wojak_engine_duplicate_id_mismatches", "A known client_order_id sent with "
                                  "different content (REJECTED)", value=stats.get("DUPLICATE_ID_MISMATCH", 0))
        yield CounterMetricFamily("wojak_engine_ticks", "Ticks accepted", value=stats.get("tick", 0))
        yield CounterMetricFamily("wojak_engine_bad_requests", "Frames that were not a valid request (REJECTED, "
                                  "recorded as anomalies)", value=stats.get("bad_request", 0))
        yield CounterMetricFamily("wojak_engine_requests", "Requests (frames) taken off the socket",
                                  value=srv.requests)
        yield CounterMetricFamily("wojak_engine_batches", "Batches decided", value=srv.batches)
        yield CounterMetricFamily("wojak_engine_outbox_restarts", "Times the escalation outbox process died "
                                  "and was started again", value=srv.outbox.restarts)
        yield GaugeMetricFamily("wojak_engine_halted", "1 while the kill switch is on", value=int(eng.book.halted))
        yield GaugeMetricFamily("wojak_engine_answers_waiting", "Batches decided whose answers wait for their "
                                "commit", value=len(srv.waiting))
        writer = srv.writer
        if writer is not None:
            yield GaugeMetricFamily("wojak_engine_batches_not_durable", "Batches handed to the store writer "
                                    "and not yet confirmed durable", value=writer.submitted - writer.confirmed)
            yield GaugeMetricFamily("wojak_engine_batches_not_materialized", "Durable batches the store's "
                                    "tables do not hold yet", value=writer.submitted - writer.materialized)


class EngineMetrics:
    """The registry, the per-batch histogram, and the HTTP server once started."""

    def __init__(self, server: Server) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineCollector(server))
        self.batch_seconds = Histogram("wojak_engine_batch_seconds", "Time to decide one batch, its intent "
                                       "sync and broker call included (its commit too with writer = inline)",
                                       buckets=BATCH_BUCKETS, registry=self.registry)
        self._httpd = None

    def serve(self, port: int, addr: str) -> int:
        """Start the exporter; the port it listens on. A port in use stops the engine, naming it."""
        try:
            self._httpd, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise SystemExit(f"[engine] metrics_port: cannot listen on {addr}:{port}: {e.strerror}") from None
        return self._httpd.server_address[1]

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
