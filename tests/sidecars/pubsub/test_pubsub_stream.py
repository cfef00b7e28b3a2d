"""The Pub/Sub sidecar end to end: the real emulator, the real `wojak sidecar pubsub` process and a real
engine. Volume, ticks, and messages carrying several orders."""
from __future__ import annotations

import json

from bench.sidecar_bench import orders
from tests.support.sidecar_fixtures import assert_stream_decided_once, decided, decision, decisions, last_price, wait_for


def _order(coid: str, symbol: str, **extra) -> dict:
    return {"client_order_id": coid, "symbol": symbol, "side": "BUY", "quantity": 65, "price": 26000.0,
            "account": "pubsub", **extra}


def test_stream_when_1000_orders_published_then_1000_decisions_and_subscription_empty(lane, engine, symbol, sidecars):
    ids = lane.publish(orders(1000, symbol, "vol"))
    assert len(set(ids)) == 1000
    sidecar = sidecars(lane.sidecar_env(engine))

    wait_for(lambda: decided(engine) >= 1000, 60, "1000 decisions", sidecar)
    assert sidecar.terminate() == 0
    assert_stream_decided_once(engine, "vol", 1000)
    d = decisions(engine)
    assert {d[f"vol-{i}"].status for i in range(1000)} == {"FILLED"}
    # A clean stop acks what was answered and nacks the rest, so whatever Pub/Sub still holds is
    # deliverable right away: nothing must be.
    assert lane.leftover() == []
    assert lane.dead_letters() == []


def test_tick_when_published_then_engine_price_moves_and_market_order_fills_at_it(lane, engine, symbol, sidecars):
    sidecar = sidecars(lane.sidecar_env(engine))
    lane.publish([json.dumps({"kind": "tick", "symbol": symbol, "ltp": 26150.5}).encode()])
    wait_for(lambda: last_price(engine, symbol) == 26150.5, 20, "the tick to move the last price", sidecar)
    market = {k: v for k, v in _order("mkt-1", symbol, order_type="MARKET").items() if k != "price"}
    lane.publish([json.dumps(market).encode()])
    wait_for(lambda: decided(engine) >= 1, 20, "the MARKET order's decision", sidecar)
    d = decision(engine, "mkt-1")
    assert d.status == "FILLED" and d.fill_price == 26150.5, d
    assert sidecar.terminate() == 0
    assert lane.leftover() == []
    assert lane.dead_letters() == []


def test_batch_message_when_json_array_of_orders_then_each_decided_and_message_acked_once(lane, engine, symbol,
                                                                                           sidecars):
    batch = json.dumps([_order(f"arr-{i}", symbol) for i in range(3)]).encode()
    lane.publish([batch])
    sidecar = sidecars(lane.sidecar_env(engine))

    wait_for(lambda: decided(engine) >= 3, 20, "three decisions from one message", sidecar)
    assert sidecar.terminate() == 0
    assert [decision(engine, f"arr-{i}").status for i in range(3)] == ["FILLED"] * 3
    assert set(engine.broker_calls().values()) == {1}
    assert lane.leftover() == []
    assert lane.dead_letters() == []


def test_batch_message_when_an_item_is_not_an_object_then_nothing_executes_and_message_dead_lettered(
        lane, engine, symbol, sidecars):
    mixed = json.dumps([_order("mix-0", symbol), 42, _order("mix-2", symbol)]).encode()
    (mixed_id,) = lane.publish([mixed])
    sidecar = sidecars(lane.sidecar_env(engine))

    dead = wait_for(lane.dead_letters, 20, "the mixed message in the DLQ", sidecar)
    assert len(dead) == 1
    assert dead[0].message.data == mixed
    assert dead[0].message.attributes["wojak_reason"].startswith("SCHEMA")
    assert dead[0].message.attributes["wojak_source_message_id"] == mixed_id
    # A batch with a non-object item is malformed as a whole: it is not split, none of it executes.
    assert decision(engine, "mix-0") is None and decision(engine, "mix-2") is None
    assert sidecar.terminate() == 0
    assert lane.leftover() == []
