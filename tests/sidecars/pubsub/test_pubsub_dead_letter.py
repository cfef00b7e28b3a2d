"""Malformed messages: recorded REJECTED/SCHEMA by the engine, then published to the dead-letter topic
with the reason, then acked; the valid messages around them are unaffected."""
from __future__ import annotations

import json

from bench.sidecar_bench import orders
from tests.support.sidecar_fixtures import decided, decision, wait_for


def test_malformed_when_published_among_orders_then_each_dead_lettered_with_reason(lane, engine, symbol, sidecars):
    garbage = {
        "not_json": b"buy nifty {now",
        "wrong_schema": json.dumps({"client_order_id": "bad-side-1", "symbol": symbol, "side": "HOLD",
                                    "quantity": 65}).encode(),
        "binary": bytes(range(256)) * 4,
        "oversized": json.dumps({"client_order_id": "big-1", "symbol": symbol, "side": "BUY", "quantity": 65,
                                 "price": 26000.0, "note": "x" * 70_000}).encode(),
    }
    valid = orders(20, symbol, "ok")
    ids = lane.publish(valid[:10] + list(garbage.values()) + valid[10:], origin="test")
    garbage_ids = dict(zip(garbage, ids[10:14]))
    sidecar = sidecars(lane.sidecar_env(engine))

    dead: list = []
    wait_for(lambda: dead.extend(lane.dead_letters()) or len(dead) >= 4, 30, "four dead letters", sidecar)
    wait_for(lambda: decided(engine) >= 24, 20, "every message decided", sidecar)
    assert sidecar.terminate() == 0

    by_source = {m.message.attributes["wojak_source_message_id"]: m.message for m in dead}
    assert len(dead) == 4 and set(by_source) == set(garbage_ids.values())
    for name, payload in garbage.items():
        m = by_source[garbage_ids[name]]
        assert m.data == payload, name
        assert m.attributes["wojak_reason"].startswith("SCHEMA"), (name, m.attributes["wojak_reason"])
        assert m.attributes["origin"] == "test"  # the original attributes travel with it
    assert "not JSON" in by_source[garbage_ids["not_json"]].attributes["wojak_reason"]
    assert "exceeds" in by_source[garbage_ids["oversized"]].attributes["wojak_reason"]
    assert by_source[garbage_ids["wrong_schema"]].attributes["wojak_client_order_id"] == "bad-side-1"

    assert decided(engine) == 24
    assert {decision(engine, f"ok-{i}").status for i in range(20)} == {"FILLED"}
    bad = decision(engine, "bad-side-1")
    assert bad.status == "REJECTED" and bad.reasons[0].startswith("SCHEMA")
    assert len(engine.broker_calls()) == 20
    assert lane.leftover() == []
