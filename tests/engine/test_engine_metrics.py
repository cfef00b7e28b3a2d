"""The engine's Prometheus exporter: a real engine, real orders over ZeroMQ, a real scrape over HTTP."""
from __future__ import annotations

import socket

import pytest

from engine_testkit import NO_LIMITS, one, order, scrape_metrics, send_ticks, tick
from tests.support.ports import free_port


def test_metrics_when_orders_decided_then_counts_by_status_and_kill_switch_exported(start_engine):
    port = free_port()
    eng = start_engine("metrics", engine={"metrics_port": port}, risk=NO_LIMITS,
                       broker={"fill_probability": 1.0})
    with eng.client() as c:
        before = scrape_metrics(port)
        assert before[("wojak_engine_decisions_total", (("status", "FILLED"),))] == 0
        assert before[("wojak_engine_halted", ())] == 0
        send_ticks(c, tick("LOTF", 100.0))
        assert one(c, order("m-1"))["status"] == "FILLED"
        assert one(c, order("m-2"))["status"] == "FILLED"
        assert one(c, order("m-1"))["duplicate"] is True
        assert one(c, order("m-3", symbol="NOSUCH"))["status"] == "REJECTED"
        assert c.call("halt", args={"reason": "drill"}).ok
        m = scrape_metrics(port)
    eng.stop()
    assert m[("wojak_engine_decisions_total", (("status", "FILLED"),))] == 2
    assert m[("wojak_engine_decisions_total", (("status", "REJECTED"),))] == 1
    assert m[("wojak_engine_decisions_total", (("status", "ESCALATED"),))] == 0
    assert m[("wojak_engine_duplicates_total", ())] == 1
    assert m[("wojak_engine_ticks_total", ())] == 1
    assert m[("wojak_engine_halted", ())] == 1
    assert m[("wojak_engine_requests_total", ())] >= 6  # the first scrape's engine saw none
    assert m[("wojak_engine_batch_seconds_count", ())] == m[("wojak_engine_batches_total", ())] >= 6
    assert m[("wojak_engine_batches_not_durable", ())] == 0  # every answer above was durable first
    assert m[("wojak_engine_answers_waiting", ())] == 0
    assert m[("wojak_engine_outbox_restarts_total", ())] == 0



def test_metrics_when_port_taken_then_engine_exits_naming_it(start_engine):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        eng = start_engine("metrics-taken", launch=False, engine={"metrics_port": port})
        with pytest.raises(RuntimeError) as err:
            eng.start(timeout=15)
    assert f"[engine] metrics_port: cannot listen on 127.0.0.1:{port}" in str(err.value)
