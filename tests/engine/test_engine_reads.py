"""Reads answered in the batch that decides what they read: a request is answered after its batch
commits, so a `get_order` behind its order's `submit_order` - the same batch, one client pipelining
both - reads that decision, as it would one batch later."""
from __future__ import annotations

from engine import protocol
from engine_testkit import NO_LIMITS, order


def test_get_order_when_in_the_batch_that_decides_the_order_then_answers_the_decision(start_engine):
    from engine.config import load
    from engine.server import build

    eng = start_engine("reads", launch=False, risk=NO_LIMITS, broker={"fill_probability": 1.0})
    engine = build(load(eng.config))
    engine.start()
    req = protocol.request
    submitted, sent, rejected, unknown = (protocol.decode_response(a) for a in engine.handle([
        req("submit_order", 1, [order("rd-1"), order("rd-2", symbol="NOPE")]),
        req("get_order", 2, args={"client_order_id": "rd-1"}),
        req("get_order", 3, args={"client_order_id": "rd-2"}),
        req("get_order", 4, args={"client_order_id": "rd-never"})]))
    assert [r["status"] for r in submitted.results] == ["FILLED", "REJECTED"]
    assert sent.data == submitted.results[0], sent  # sent to the broker in this batch: its decision
    assert rejected.data == submitted.results[1], rejected  # decided at the gate in this batch
    assert unknown.data is None
    # and one batch later, from the store, the same
    later = protocol.decode_response(engine.handle([req("get_order", 5, args={"client_order_id": "rd-1"})])[0])
    assert later.data == submitted.results[0]
