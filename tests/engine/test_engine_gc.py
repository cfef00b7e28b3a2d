"""The engine's hot path creates no reference cycles: what the server relies on to keep the garbage
collector out of it (it freezes what exists after every batch and collects only when idle, see
engine/server.py). Every path a batch can take runs here with the collector off; a collection
afterwards must find nothing unreachable.
"""
from __future__ import annotations

import collections
import gc

from engine import protocol
from engine.broker.base import BrokerError
from engine_testkit import NO_LIMITS, order, tick


def _every_kind_of_batch(n: int) -> list[list[bytes]]:
    """Fills and failures, rejections, escalations, duplicates and mismatches, ticks good and bad,
    garbage items and garbage frames, and every control kind."""
    req = protocol.request
    fresh = [order(f"gc-{n}-{i}", side="BUY" if i % 2 else "SELL", account=f"gc{i % 3}") for i in range(8)]
    return [
        [req("tick", 1, [tick("BANDF", 1000.0), tick("NOPE", 1.0), {"symbol": 7}])],
        [req("submit_order", 2, fresh)],
        [req("submit_order", 3, [fresh[0], dict(fresh[1], quantity=2),  # a duplicate; an id reused
                                 order(f"gc-{n}-lot", symbol="FUTA", quantity=7),  # REJECTED: lot
                                 order(f"gc-{n}-sym", symbol="NOPE"),  # REJECTED: unknown symbol
                                 order(f"gc-{n}-band", symbol="BANDF", quantity=50, price=2000.0),  # ESCALATED
                                 b"\xff not json", {"client_order_id": 3}]),  # SCHEMA
         req("ingest", 4, [b'{"kind": "tick", "symbol": "BANDF", "ltp": 1001}', b"{}"], msg_ids=["m1", "m2"]),
         b"\x93garbage", req("no_such_kind", 5), req("set_checkpoint", 6, args={"key": "k", "value": f"{n}"})],
        [req("get_order", 7, args={"client_order_id": f"gc-{n}-0"}), req("positions", 8),
         req("get_checkpoint", 9, args={"key": "k"}), req("health", 10), req("set_checkpoint", 11, args={"key": 1})],
        [req("halt", 12, args={"reason": "test"}), req("submit_order", 13, [order(f"gc-{n}-halted")]),
         req("resume", 14)],
    ]


def test_engine_when_every_kind_of_batch_runs_then_no_reference_cycles_are_left(start_engine):
    from engine.config import load
    from engine.server import build

    eng = start_engine("gc", launch=False, risk=NO_LIMITS, broker={"fill_probability": 0.5})
    engine = build(load(eng.config))
    engine.start()
    statuses: collections.Counter[str] = collections.Counter()

    def run(batches: list[list[bytes]]) -> None:
        for frames in batches:
            for answer in engine.handle(frames):
                statuses.update(r["status"] for r in protocol.decode_response(answer).results or ())

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage, to be named
    try:
        for n in range(3):
            run(_every_kind_of_batch(n))
        # The broker unreachable: the batch's intents stay pending, its orders are answered
        # PENDING; once it is back, reconciliation settles or drops them (the broker never had them).
        real_submit = engine.broker.submit

        def unreachable(orders):
            raise BrokerError("connection refused")

        engine.broker.submit = unreachable
        run(_every_kind_of_batch(3)[:2])
        engine.broker.submit = real_submit
        run(_every_kind_of_batch(3)[1:3])
        found = gc.collect()
        garbage = collections.Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        engine.store.close()
        engine.broker.close()
    # Every path was taken (else the check below proves less than it says).
    assert {"FILLED", "FAILED", "REJECTED", "ESCALATED", "ACCEPTED", "PENDING"} <= set(statuses), statuses
    assert found == 0, f"the hot path left {found} objects in reference cycles: {garbage.most_common(8)}"
