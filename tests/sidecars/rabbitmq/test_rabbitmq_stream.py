"""The RabbitMQ sidecar against a real RabbitMQ node and a real engine: volume, crashes, drain."""
from __future__ import annotations

import json
import time

from bench.sidecar_bench import orders
from tests.support.sidecar_fixtures import (assert_executed_once_each, assert_exits_2_naming_missing, batch_message,
                                            decided, decision, last_price, market_order, stream_through_engine_kill,
                                            stream_through_sidecar_kill, stream_through_sigterm,
                                            wait_decided_and_drained, wait_filled_at, wait_for, wait_stream_started)


def test_publish_1000_orders_when_sidecar_runs_then_1000_decisions_and_queue_empty(lane, engine, symbol, sidecars):
    lane.publish(orders(1000, symbol, "vol"))
    assert lane.counts() == (1000, 0)
    car = sidecars(lane.sidecar_env(engine))
    wait_decided_and_drained(engine, lane, car, 1000)
    assert_executed_once_each(engine, 1000)
    assert decision(engine, "vol-0").status == "FILLED"
    assert decided(engine) == 1000


def test_engine_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(lane, engine, symbol, sidecars):
    stream_through_engine_kill(engine, lane, sidecars, symbol)


def test_sidecar_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(lane, engine, symbol, sidecars):
    def unanswered_still_at_the_broker(before: int) -> None:
        wait_for(lambda: lane.counts()[1] == 0, 20, "the broker to requeue the dead consumer's deliveries", every=0.3)
        ready, _ = lane.counts()
        assert ready >= 300 - before, "messages the engine never answered must still be at the broker"

    stream_through_sidecar_kill(engine, lane, sidecars, symbol, unanswered_still_at_the_broker)


def test_sigterm_when_streaming_then_exit_0_and_nothing_lost(lane, engine, symbol, sidecars):
    def nothing_acked_early(done: int) -> None:
        ready, unacked = lane.counts()
        assert unacked == 0
        assert ready + done == 300, f"{ready} at the broker + {done} decided != 300: a message was lost or acked early"

    stream_through_sigterm(engine, lane, sidecars, symbol, nothing_acked_early)


def test_broker_closes_connection_when_streaming_then_sidecar_reconnects_and_nothing_lost(lane, engine, symbol,
                                                                                          sidecars, rabbitmq):
    lane.publish(orders(300, symbol, "rc"))
    car = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW="10"))
    wait_stream_started(engine, car, 30)
    rabbitmq.ctl("close_all_connections", "test: connection loss")
    wait_decided_and_drained(engine, lane, car, 300)
    assert_executed_once_each(engine, 300)
    assert "connection lost" in car.tail()


def test_ticks_when_published_then_engine_price_moves_and_market_order_fills_at_it(lane, engine, symbol, sidecars):
    car = sidecars(lane.sidecar_env(engine))
    # Three ways to say "tick": the JSON kind, the AMQP type property, the tick queue.
    lane.publish([json.dumps({"kind": "tick", "symbol": symbol, "ltp": 26100.0}).encode()])
    lane.publish([json.dumps({"symbol": symbol, "ltp": 26200.0}).encode()], type="tick")
    wait_for(lambda: last_price(engine, symbol) == 26200.0, 20, "the typed tick", car)
    lane.publish([json.dumps({"symbol": symbol, "ltp": 26250.0}).encode()], queue=lane.tick_queue)
    wait_for(lambda: last_price(engine, symbol) == 26250.0, 20, "the tick-queue tick", car)
    lane.publish([market_order("mkt-1", symbol)])
    wait_filled_at(engine, car, "mkt-1", 26250.0)
    wait_for(lambda: lane.counts() == (0, 0) and lane.counts(lane.tick_queue) == (0, 0), 20, "all acked", car,
             every=0.3)


def test_batch_message_when_all_orders_answered_then_acked_once(lane, engine, symbol, sidecars):
    lane.publish([batch_message(5, symbol, "batch")])
    car = sidecars(lane.sidecar_env(engine))
    wait_decided_and_drained(engine, lane, car, 5, timeout=20)
    assert_executed_once_each(engine, 5)


def test_required_setting_missing_when_started_then_exit_2_naming_it(lane, engine, sidecars):
    assert_exits_2_naming_missing(sidecars, lane.sidecar_env(engine), "WOJAK_RABBITMQ_QUEUE")


def test_sidecar_started_before_its_engine_when_engine_comes_up_then_consumes_only_from_then(lane, engine, symbol,
                                                                                          sidecars, rabbitmq):
    engine.stop()  # the engine is not there yet (or stands by: another node's engine writes the store)
    lane.publish(orders(50, symbol, "early"))
    car = sidecars(lane.sidecar_env(engine))
    time.sleep(3)  # fed, the sidecar would have taken (and requeued) them by now
    assert lane.counts() == (50, 0)
    consumers = {line.split()[0]: int(line.split()[1]) for line in rabbitmq.ctl(
        "list_queues", "-q", "--no-table-headers", "name", "consumers").splitlines() if len(line.split()) == 2}
    assert consumers[lane.queue] == 0, "a consumer joined before its engine could decide"
    assert "waits for the engine" in car.tail()
    engine.start()
    wait_decided_and_drained(engine, lane, car, 50)
    assert_executed_once_each(engine, 50)
