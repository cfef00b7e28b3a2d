"""Garbage on a Kafka topic: recorded by the engine, produced to the dead-letter topic with its reason,
the rest unaffected and every offset committed."""
from __future__ import annotations

from bench.sidecar_bench import orders
from sidecars.kafka import REASON_HEADER
from tests.support.sidecar_fixtures import assert_executed_once_each, decision, garbage, wait_decided_and_drained


def test_malformed_messages_when_consumed_then_dead_lettered_with_reason_and_rest_decided(lane, engine, symbol,
                                                                                           sidecars):
    good, bad = orders(20, symbol, "dl"), garbage(symbol)
    lane.publish(good[:10] + list(bad) + good[10:])
    car = sidecars(lane.sidecar_env(engine))
    wait_decided_and_drained(engine, lane, car, 24, timeout=30)  # 20 orders and 4 garbage messages
    dead = lane.server.read_all(lane.dlq, expect=4)
    assert len(dead) == 4
    by_body = {m.value(): dict(m.headers()) for m in dead}
    assert set(by_body) == set(bad), "the dead-letter topic must hold exactly the garbage, byte for byte"
    for body, want in bad.items():
        headers = by_body[body]
        assert headers[REASON_HEADER].decode().startswith(want), (want, headers[REASON_HEADER])
        assert headers["x-wojak-source-topic"].decode() == lane.topic
        assert int(headers["x-wojak-source-offset"]) >= 0
    assert "$.side" in by_body[list(bad)[1]][REASON_HEADER].decode()
    assert decision(engine, "wrong-1").reasons[0].startswith("SCHEMA")
    assert all(decision(engine, f"dl-{i}").status == "FILLED" for i in range(20))
    assert_executed_once_each(engine, 20)
