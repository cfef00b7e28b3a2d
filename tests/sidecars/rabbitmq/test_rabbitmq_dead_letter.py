"""Garbage on the RabbitMQ queue: recorded by the engine, dead-lettered with its reason, the rest unaffected."""
from __future__ import annotations

import json

from bench.sidecar_bench import orders
from sidecars.rabbitmq import REASON_HEADER
from tests.support.sidecar_fixtures import decided, decision, garbage, wait_for


def test_malformed_messages_when_consumed_then_dead_lettered_with_reason_and_rest_decided(lane, engine, symbol,
                                                                                           sidecars):
    good, bad = orders(20, symbol, "dl"), garbage(symbol)
    lane.publish(good[:10] + list(bad) + good[10:])
    car = sidecars(lane.sidecar_env(engine))
    wait_for(lambda: decided(engine) == 24, 30, "20 orders and 4 garbage messages recorded", car)
    dead: list = []  # reading the DLQ consumes it: collect across polls
    wait_for(lambda: dead.extend(lane.dead_letters()) or len(dead) >= 4, 20, "4 dead letters", car)
    assert len(dead) == 4
    by_body = {body: props for props, body in dead}
    assert set(by_body) == set(bad), "the dead-letter queue must hold exactly the garbage, byte for byte"
    for body, want in bad.items():
        reason = by_body[body].headers[REASON_HEADER]
        assert reason.startswith(want), (want, reason)
        assert by_body[body].headers["x-wojak-source-queue"] == lane.queue
    assert "$.side" in by_body[list(bad)[1]].headers[REASON_HEADER]  # the schema error names the field
    assert decision(engine, "wrong-1").reasons[0].startswith("SCHEMA")
    wait_for(lane.drained, 20, "the orders queue drained", car, every=lane.drain_poll_s)
    assert all(decision(engine, f"dl-{i}").status == "FILLED" for i in range(20))


def test_same_id_with_other_content_when_consumed_then_dead_lettered_as_duplicate_mismatch(lane, engine, symbol,
                                                                                            sidecars):
    first = {"client_order_id": "twin-1", "symbol": symbol, "side": "BUY", "quantity": 65, "price": 26000.0}
    lane.publish([json.dumps(first).encode(), json.dumps({**first, "quantity": 130}).encode()])
    car = sidecars(lane.sidecar_env(engine))
    dead: list = []
    wait_for(lambda: dead.extend(lane.dead_letters()) or dead, 20, "the impostor dead-lettered", car)
    wait_for(lane.drained, 20, "the orders queue drained", car, every=lane.drain_poll_s)
    dead.extend(lane.dead_letters())
    assert len(dead) == 1
    props, body = dead[0]
    assert json.loads(body)["quantity"] == 130
    assert props.headers[REASON_HEADER].startswith("DUPLICATE_ID_MISMATCH")
    assert decision(engine, "twin-1").quantity == 65
    assert engine.broker_calls() == {"twin-1": 1}
    wait_for(lane.drained, 20, "the orders queue drained", car, every=lane.drain_poll_s)


def test_broker_dead_letters_on_its_own_when_rejected_then_message_reaches_same_dlq(lane):
    """The queue's x-dead-letter-exchange catches what the broker dead-letters without the sidecar."""
    lane.publish([b"rejected by someone else"])
    with lane.channel() as ch:
        method, _, _ = ch.basic_get(lane.queue)
        ch.basic_reject(method.delivery_tag, requeue=False)
    dead = wait_for(lambda: lane.dead_letters(), 10, "the broker's dead letter")
    props, body = dead[0]
    assert body == b"rejected by someone else"
    assert props.headers["x-death"][0]["reason"] == "rejected"
