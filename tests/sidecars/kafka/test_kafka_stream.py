"""The Kafka sidecar against a real Kafka-protocol broker and a real engine: volume, crashes,
rebalance, drain."""
from __future__ import annotations

import json

from bench.sidecar_bench import orders
from tests.support.sidecar_fixtures import (assert_executed_once_each, assert_exits_2_naming_missing, batch_message,
                                            decided, decision, last_price, market_order, paced,
                                            stream_through_engine_kill, stream_through_sidecar_kill,
                                            stream_through_sigterm, wait_decided_and_drained, wait_filled_at, wait_for)


def test_publish_1000_orders_when_sidecar_runs_then_1000_decisions_and_all_committed(lane, engine, symbol, sidecars):
    lane.publish(orders(1000, symbol, "vol"))
    assert sum(lane.ends.values()) == 1000 and len(lane.ends) == 3
    car = sidecars(lane.sidecar_env(engine))
    wait_decided_and_drained(engine, lane, car, 1000)
    assert_executed_once_each(engine, 1000)
    assert decision(engine, "vol-0").status == "FILLED"
    assert decided(engine) == 1000


def _nothing_committed_before_its_answer(lane):
    def check(done: int) -> None:
        assert lane.uncommitted() >= 300 - done, "an offset was committed before its answer"
    return check


def test_engine_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(lane, engine, symbol, sidecars):
    stream_through_engine_kill(engine, lane, sidecars, symbol, _nothing_committed_before_its_answer(lane))


def test_sidecar_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(lane, engine, symbol, sidecars):
    stream_through_sidecar_kill(engine, lane, sidecars, symbol, _nothing_committed_before_its_answer(lane))


def test_one_of_two_group_members_killed_when_streaming_then_other_takes_over_exactly_once(lane, engine, symbol,
                                                                                           sidecars):
    paced(engine)
    lane.publish(orders(600, symbol, "rb"))
    env = lane.sidecar_env(engine, WOJAK_WINDOW="10")
    a, b = sidecars(env), sidecars(env)
    # Three partitions, two members: once both hold partitions, each owns at least one.
    wait_for(lambda: "assigned ['" in a.tail() and "assigned ['" in b.tail() and decided(engine) >= 100, 30,
             "both members consuming", a, every=0.02)
    victim, survivor = a, b
    victim.kill()
    assert decided(engine) < 600, "the stream finished before the kill: the test proved nothing"
    wait_decided_and_drained(engine, lane, survivor, 600)
    assert_executed_once_each(engine, 600)
    assert survivor.tail().count("assigned") >= 2, "the survivor never took over the victim's partitions"


def test_sigterm_when_streaming_then_exit_0_and_nothing_lost(lane, engine, symbol, sidecars):
    stream_through_sigterm(engine, lane, sidecars, symbol, _nothing_committed_before_its_answer(lane))


def test_ticks_when_published_then_engine_price_moves_and_market_order_fills_at_it(lane, engine, symbol, sidecars):
    car = sidecars(lane.sidecar_env(engine))
    # Three ways to say "tick": the JSON kind, a `kind: tick` header, the tick topic.
    lane.publish([json.dumps({"kind": "tick", "symbol": symbol, "ltp": 26100.0}).encode()])
    wait_for(lambda: last_price(engine, symbol) == 26100.0, 30, "the JSON tick", car)
    lane.publish([json.dumps({"symbol": symbol, "ltp": 26200.0}).encode()], headers=[("kind", b"tick")])
    wait_for(lambda: last_price(engine, symbol) == 26200.0, 20, "the header tick", car)
    lane.publish([json.dumps({"symbol": symbol, "ltp": 26250.0}).encode()], topic=lane.tick_topic)
    wait_for(lambda: last_price(engine, symbol) == 26250.0, 20, "the tick-topic tick", car)
    lane.publish([market_order("mkt-1", symbol)])
    wait_filled_at(engine, car, "mkt-1", 26250.0)
    wait_for(lane.all_committed, 20, "ticks and the order committed", car, every=0.2)


def test_batch_message_when_all_orders_answered_then_committed_once(lane, engine, symbol, sidecars):
    lane.publish([batch_message(5, symbol, "batch")])
    car = sidecars(lane.sidecar_env(engine))
    wait_decided_and_drained(engine, lane, car, 5, timeout=30)
    assert_executed_once_each(engine, 5)


def test_required_setting_missing_when_started_then_exit_2_naming_it(lane, engine, sidecars):
    assert_exits_2_naming_missing(sidecars, lane.sidecar_env(engine), "WOJAK_KAFKA_BOOTSTRAP")
