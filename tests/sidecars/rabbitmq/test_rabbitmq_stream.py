"""The RabbitMQ sidecar against a real RabbitMQ node and a real engine: volume, crashes, drain."""
from __future__ import annotations

import json

from bench.sidecar_bench import orders
from tests.sidecars.rabbitmq.rabbitmq_helpers import decided, decision, wait_for


def _all_once(engine, n: int) -> None:
    calls = engine.broker_calls()
    assert len(calls) == n, f"{len(calls)} orders reached the broker, expected {n}"
    assert set(calls.values()) == {1}, {k: v for k, v in calls.items() if v != 1}


def test_publish_1000_orders_when_sidecar_runs_then_1000_decisions_and_queue_empty(lane, engine, symbol, sidecars):
    lane.publish(orders(1000, symbol, "vol"))
    assert lane.counts() == (1000, 0)
    car = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 1000, 60, "1000 decisions", car)
    wait_for(lambda: lane.counts() == (0, 0), 20, "queue drained and nothing unacked", car, every=0.3)
    _all_once(engine, 1000)
    assert decision(engine, "vol-0").status == "FILLED"
    assert decided(engine) == 1000


def test_engine_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(lane, engine, symbol, sidecars):
    lane.publish(orders(300, symbol, "ek"))
    car = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW="20"))
    wait_for(lambda: decided(engine) >= 60, 30, "the stream to start", car, every=0.01)
    engine.kill()
    assert decided(engine) < 300, "the engine finished before it was killed: the test proved nothing"
    engine.start()
    wait_for(lambda: decided(engine) == 300, 60, "300 decisions after the restart", car)
    wait_for(lambda: lane.counts() == (0, 0), 20, "queue drained", car, every=0.3)
    _all_once(engine, 300)


def test_sidecar_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(lane, engine, symbol, sidecars):
    lane.publish(orders(300, symbol, "sk"))
    first = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW="20"))
    wait_for(lambda: decided(engine) >= 60, 30, "the stream to start", first, every=0.01)
    first.kill()
    before = decided(engine)
    assert before < 300, "the sidecar finished before it was killed: the test proved nothing"
    wait_for(lambda: lane.counts()[1] == 0, 20, "the broker to requeue the dead consumer's deliveries", every=0.3)
    ready, _ = lane.counts()
    assert ready >= 300 - before, "messages the engine never answered must still be at the broker"
    second = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 300, 60, "300 decisions after the restart", second)
    wait_for(lambda: lane.counts() == (0, 0), 20, "queue drained", second, every=0.3)
    _all_once(engine, 300)


def test_sigterm_when_streaming_then_exit_0_and_nothing_lost(lane, engine, symbol, sidecars):
    lane.publish(orders(300, symbol, "st"))
    car = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW="10"))
    wait_for(lambda: decided(engine) >= 30, 30, "the stream to start", car, every=0.01)
    assert car.terminate() == 0, car.tail()
    done = decided(engine)
    ready, unacked = lane.counts()
    assert unacked == 0
    assert ready + done == 300, f"{ready} at the broker + {done} decided != 300: a message was lost or acked early"
    car2 = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 300, 60, "the rest after a restart", car2)
    wait_for(lambda: lane.counts() == (0, 0), 20, "queue drained", car2, every=0.3)
    _all_once(engine, 300)


def test_broker_closes_connection_when_streaming_then_sidecar_reconnects_and_nothing_lost(lane, engine, symbol,
                                                                                          sidecars, rabbitmq):
    lane.publish(orders(300, symbol, "rc"))
    car = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW="10"))
    wait_for(lambda: decided(engine) >= 30, 30, "the stream to start", car, every=0.01)
    rabbitmq.ctl("close_all_connections", "test: connection loss")
    wait_for(lambda: decided(engine) == 300, 60, "300 decisions after the reconnect", car)
    wait_for(lambda: lane.counts() == (0, 0), 20, "queue drained", car, every=0.3)
    _all_once(engine, 300)
    assert "connection lost" in car.tail()


def test_ticks_when_published_then_engine_price_moves_and_market_order_fills_at_it(lane, engine, symbol, sidecars):
    car = sidecars(lane.sidecar_env(engine))
    # Three ways to say "tick": the JSON kind, the AMQP type property, the tick queue.
    lane.publish([json.dumps({"kind": "tick", "symbol": symbol, "ltp": 26100.0}).encode()])
    lane.publish([json.dumps({"symbol": symbol, "ltp": 26200.0}).encode()], type="tick")
    wait_for(lambda: _ltp(engine, symbol) == 26200.0, 20, "the typed tick", car)
    lane.publish([json.dumps({"symbol": symbol, "ltp": 26250.0}).encode()], queue=lane.tick_queue)
    wait_for(lambda: _ltp(engine, symbol) == 26250.0, 20, "the tick-queue tick", car)
    lane.publish([json.dumps({"client_order_id": "mkt-1", "symbol": symbol, "side": "BUY", "quantity": 65,
                              "order_type": "MARKET", "account": "t"}).encode()])
    d = wait_for(lambda: decision(engine, "mkt-1"), 20, "the market order", car)
    assert d.status == "FILLED", d
    assert d.fill_price == 26250.0
    wait_for(lambda: lane.counts() == (0, 0) and lane.counts(lane.tick_queue) == (0, 0), 20, "all acked", car,
             every=0.3)


def test_batch_message_when_all_orders_answered_then_acked_once(lane, engine, symbol, sidecars):
    batch = [json.loads(o) for o in orders(5, symbol, "batch")]
    lane.publish([json.dumps(batch).encode()])
    car = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 5, 20, "five decisions from one message", car)
    wait_for(lambda: lane.counts() == (0, 0), 20, "the batch acked", car, every=0.3)
    _all_once(engine, 5)


def test_required_setting_missing_when_started_then_exit_2_naming_it(lane, engine, sidecars):
    env = lane.sidecar_env(engine)
    env["WOJAK_RABBITMQ_QUEUE"] = ""
    car = sidecars(env)
    assert car.proc.wait(30) == 2
    assert "WOJAK_RABBITMQ_QUEUE" in car.tail()


def _ltp(engine, symbol: str) -> float | None:
    store = engine.store()
    try:
        price = store.last_prices().get(symbol)  # (ltp, ts)
        return price[0] if price else None
    finally:
        store.close()

