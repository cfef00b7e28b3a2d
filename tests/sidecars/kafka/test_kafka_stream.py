"""The Kafka sidecar against a real Kafka-protocol broker and a real engine: volume, crashes,
rebalance, drain."""
from __future__ import annotations

import json

from bench.sidecar_bench import orders
from tests.sidecars.kafka.kafka_helpers import all_once, decided, decision, last_price, wait_for


def test_publish_1000_orders_when_sidecar_runs_then_1000_decisions_and_all_committed(lane, engine, symbol, sidecars):
    lane.publish(orders(1000, symbol, "vol"))
    assert sum(lane.ends.values()) == 1000 and len(lane.ends) == 3
    car = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 1000, 60, "1000 decisions", car)
    wait_for(lane.all_committed, 20, "every partition committed to its end", car, every=0.2)
    all_once(engine, 1000)
    assert decision(engine, "vol-0").status == "FILLED"
    assert decided(engine) == 1000


def test_engine_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(lane, engine, symbol, sidecars):
    lane.publish(orders(300, symbol, "ek"))
    car = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW="20"))
    wait_for(lambda: decided(engine) >= 60, 30, "the stream to start", car, every=0.01)
    engine.kill()
    assert decided(engine) < 300, "the engine finished before it was killed: the test proved nothing"
    assert lane.uncommitted() >= 300 - decided(engine), "an offset was committed before its answer"
    engine.start()
    wait_for(lambda: decided(engine) == 300, 60, "300 decisions after the restart", car)
    wait_for(lane.all_committed, 20, "every partition committed", car, every=0.2)
    all_once(engine, 300)


def test_sidecar_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(lane, engine, symbol, sidecars):
    lane.publish(orders(300, symbol, "sk"))
    first = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW="20"))
    wait_for(lambda: decided(engine) >= 60, 30, "the stream to start", first, every=0.01)
    first.kill()
    done = decided(engine)
    assert done < 300, "the sidecar finished before it was killed: the test proved nothing"
    assert lane.uncommitted() >= 300 - done, "an offset was committed before its answer"
    second = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 300, 60, "300 decisions after the restart", second)
    wait_for(lane.all_committed, 20, "every partition committed", second, every=0.2)
    all_once(engine, 300)


def test_one_of_two_group_members_killed_when_streaming_then_other_takes_over_exactly_once(lane, engine, symbol,
                                                                                           sidecars):
    lane.publish(orders(600, symbol, "rb"))
    env = lane.sidecar_env(engine, WOJAK_WINDOW="10")
    a, b = sidecars(env), sidecars(env)
    # Three partitions, two members: once both hold partitions, each owns at least one.
    wait_for(lambda: "assigned ['" in a.tail() and "assigned ['" in b.tail() and decided(engine) >= 100, 30,
             "both members consuming", a, every=0.02)
    victim, survivor = a, b
    victim.kill()
    assert decided(engine) < 600, "the stream finished before the kill: the test proved nothing"
    wait_for(lambda: decided(engine) == 600, 60, "600 decisions after the rebalance", survivor)
    wait_for(lane.all_committed, 20, "every partition committed", survivor, every=0.2)
    all_once(engine, 600)
    assert survivor.tail().count("assigned") >= 2, "the survivor never took over the victim's partitions"


def test_sigterm_when_streaming_then_exit_0_and_nothing_lost(lane, engine, symbol, sidecars):
    lane.publish(orders(300, symbol, "st"))
    car = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW="10"))
    wait_for(lambda: decided(engine) >= 30, 30, "the stream to start", car, every=0.01)
    assert car.terminate() == 0, car.tail()
    done = decided(engine)
    assert lane.uncommitted() >= 300 - done, "an offset was committed before its answer"
    car2 = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 300, 60, "the rest after a restart", car2)
    wait_for(lane.all_committed, 20, "every partition committed", car2, every=0.2)
    all_once(engine, 300)


def test_ticks_when_published_then_engine_price_moves_and_market_order_fills_at_it(lane, engine, symbol, sidecars):
    car = sidecars(lane.sidecar_env(engine))
    # Three ways to say "tick": the JSON kind, a `kind: tick` header, the tick topic.
    lane.publish([json.dumps({"kind": "tick", "symbol": symbol, "ltp": 26100.0}).encode()])
    wait_for(lambda: last_price(engine, symbol) == 26100.0, 30, "the JSON tick", car)
    lane.publish([json.dumps({"symbol": symbol, "ltp": 26200.0}).encode()], headers=[("kind", b"tick")])
    wait_for(lambda: last_price(engine, symbol) == 26200.0, 20, "the header tick", car)
    lane.publish([json.dumps({"symbol": symbol, "ltp": 26250.0}).encode()], topic=lane.tick_topic)
    wait_for(lambda: last_price(engine, symbol) == 26250.0, 20, "the tick-topic tick", car)
    lane.publish([json.dumps({"client_order_id": "mkt-1", "symbol": symbol, "side": "BUY", "quantity": 65,
                              "order_type": "MARKET", "account": "t"}).encode()])
    d = wait_for(lambda: decision(engine, "mkt-1"), 20, "the market order", car)
    assert d.status == "FILLED", d
    assert d.fill_price == 26250.0
    wait_for(lane.all_committed, 20, "ticks and the order committed", car, every=0.2)


def test_batch_message_when_all_orders_answered_then_committed_once(lane, engine, symbol, sidecars):
    batch = [json.loads(o) for o in orders(5, symbol, "batch")]
    lane.publish([json.dumps(batch).encode()])
    car = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 5, 30, "five decisions from one message", car)
    wait_for(lane.all_committed, 20, "the batch committed", car, every=0.2)
    all_once(engine, 5)


def test_required_setting_missing_when_started_then_exit_2_naming_it(lane, engine, sidecars):
    env = lane.sidecar_env(engine)
    env["WOJAK_KAFKA_BOOTSTRAP"] = ""
    car = sidecars(env)
    assert car.proc.wait(30) == 2
    assert "WOJAK_KAFKA_BOOTSTRAP" in car.tail()
