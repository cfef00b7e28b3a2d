"""Garbage on a Kafka topic: recorded by the engine, produced to the dead-letter topic with its reason,
the rest unaffected and every offset committed."""
from __future__ import annotations

import json

from bench.sidecar_bench import orders
from sidecars.kafka import REASON_HEADER
from tests.sidecars.kafka.kafka_helpers import all_once, decided, decision, wait_for


def test_malformed_messages_when_consumed_then_dead_lettered_with_reason_and_rest_decided(lane, engine, symbol,
                                                                                           sidecars):
    good = orders(20, symbol, "dl")
    bad = {
        b"this is not json {": "SCHEMA: not JSON",
        json.dumps({"client_order_id": "wrong-1", "symbol": symbol, "side": "HOLD", "quantity": 65}).encode():
            "SCHEMA",
        bytes(range(256)) * 4: "SCHEMA: not JSON",
        json.dumps({"client_order_id": "big-1", "pad": "x" * (65 * 1024)}).encode(): "SCHEMA: message of",
    }
    lane.publish(good[:10] + list(bad) + good[10:])
    car = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 24, 30, "20 orders and 4 garbage messages recorded", car)
    wait_for(lane.all_committed, 20, "every offset committed, garbage included", car, every=0.2)
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
    all_once(engine, 20)

