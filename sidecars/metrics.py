"""Prometheus metrics every sidecar exports (the HTTP sidecar on /metrics, the others on
WOJAK_METRICS_PORT when set)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("wojak_sidecar_messages_total", "Messages received from the source", ["source"])
SETTLED = Counter("wojak_sidecar_settled_total", "Messages settled at the source", ["source", "outcome"])
DECISIONS = Counter("wojak_orders_total", "Engine decisions by status", ["source", "status"])
LATENCY = Histogram("wojak_answer_seconds", "Receive-to-settle latency", ["source"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
IN_FLIGHT = Gauge("wojak_in_flight", "Items sent to the engine and not yet answered", ["source"])
QUEUE_DEPTH = Gauge("wojak_queue_depth", "Requests waiting for a window slot", ["source"])


def received(source: str) -> None:
    MESSAGES.labels(source).inc()


def settled(source: str, outcome: str, seconds: float) -> None:
    SETTLED.labels(source, outcome).inc()
    LATENCY.labels(source).observe(seconds)


def decision(source: str, status: str) -> None:
    DECISIONS.labels(source, status).inc()
