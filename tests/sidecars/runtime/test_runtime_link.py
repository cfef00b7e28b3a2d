"""sidecars/link.py + runtime.py + memory.py against a real engine: the window bound, resend after an
engine restart, give-up -> requeue, dead-lettering garbage, and the graceful drain."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from sidecars.link import EngineLink, Outcome
from sidecars.memory import MemorySource
from sidecars.runtime import Runner
from tests.support.engine_proc import EngineProcess, nifty_fut

FAST_RISK = {"max_orders_per_second": 1_000_000, "max_position_lots": 100_000, "max_gross_exposure": 1e15}


def payloads(n: int, prefix: str | None = None) -> list[bytes]:
    prefix = prefix or f"rt-{uuid.uuid4().hex[:6]}"
    sym = nifty_fut()
    return [json.dumps({"client_order_id": f"{prefix}-{i}", "symbol": sym, "side": "BUY" if i % 2 else "SELL",
                        "quantity": 65, "price": 26000.0, "account": f"r{i % 5}"}).encode() for i in range(n)]


def wait_until(pred, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Run:
    """A Runner on its own thread, as a sidecar's main thread would run it."""

    def __init__(self, source: MemorySource, link: EngineLink, deciding: bool = False) -> None:
        self.runner = Runner(source, link, receive_max=20, receive_wait_s=0.05, drain_timeout_s=10)
        self.runner.engine_deciding = deciding  # True: as if the engine had decided before it went away
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._go, daemon=True)
        self.thread.start()

    def _go(self) -> None:
        self.rc = self.runner.run()

    def stop(self) -> int | None:
        self.runner.stop()
        self.thread.join(30)
        return self.rc


def test_link_when_window_full_then_submit_blocks_until_the_engine_answers(tmp_path):
    engine = EngineProcess(tmp_path, risk=FAST_RISK)  # not running yet: nothing gets answered
    link = EngineLink(engine.endpoint, window=3, resend_after_s=0.5, give_up_s=60)
    answers: list[Outcome] = []
    try:
        for p in payloads(3):
            assert link.submit(p, answers.append, timeout=1)
        started = time.monotonic()
        assert link.submit(payloads(1)[0], answers.append, timeout=0.3) is False
        assert time.monotonic() - started >= 0.25
        assert (link.in_flight, link.free(), answers) == (3, 0, [])
        engine.start()
        wait_until(lambda: len(answers) == 3, 20)
        assert all(a.recorded for a in answers)
        assert link.in_flight == 0 and link.wait_idle(1)
    finally:
        link.close()
        engine.stop()


@pytest.mark.parametrize("decided_before", [False, True], ids=["from-the-start", "after-it-decided"])
def test_runner_when_engine_not_answering_then_nothing_lost_and_all_decided_once_it_does(tmp_path, decided_before):
    engine = EngineProcess(tmp_path, risk=FAST_RISK)
    source = MemorySource(payloads(20))
    link = EngineLink(engine.endpoint, window=10, resend_after_s=0.3, give_up_s=0.8)
    run = Run(source, link, deciding=decided_before)
    try:
        if decided_before:  # fed while it went away: the link gives items up, the runner requeues them
            wait_until(lambda: source.requeues >= 10, 20)
            assert source.acked == {} and source.outstanding == 20  # nothing lost, nothing acked
        else:  # never heard from: not fed at all (fed, it would have requeued by now)
            time.sleep(2.5)
            assert (source.requeues, len(source.ready), source.acked) == (0, 20, {})
        engine.start()
        wait_until(lambda: len(source.acked) == 20, 30)
        assert source.outstanding == 0
        assert all(d["status"] in ("FILLED", "FAILED") for d in source.acked.values())
    finally:
        assert run.stop() == 0
        link.close()
        engine.stop()


def test_link_when_engine_killed_and_restarted_mid_stream_then_resends_and_nothing_is_executed_twice(tmp_path):
    # A broker round trip of 20 ms per batch keeps orders inside the engine at any instant, so the
    # kill always takes some answers with it (without it a fast engine may have answered everything
    # sent, and the link's queued sends simply go to the restarted engine: nothing to resend).
    engine = EngineProcess(tmp_path, risk=FAST_RISK, broker={"latency_ms": 20}).start()
    items = payloads(300)
    source = MemorySource(items)
    link = EngineLink(engine.endpoint, window=50, resend_after_s=0.5, give_up_s=30)
    run = Run(source, link)
    try:
        wait_until(lambda: len(source.acked) >= 60, 30)
        engine.kill()
        at_kill = len(source.acked)
        time.sleep(0.5)
        engine.start()
        wait_until(lambda: len(source.acked) == 300, 60)
        assert at_kill < 300 and source.outstanding == 0
        assert link.resends > 0 or source.requeues > 0  # the kill cost some answers
        calls = engine.broker_calls()
        assert all(n == 1 for n in calls.values())
        store = engine.store()
        for i, p in enumerate(items):  # what the source acked is what the engine recorded
            assert store.get_decision(json.loads(p)["client_order_id"]).status == source.acked[f"m{i}"]["status"]
    finally:
        assert run.stop() == 0
        link.close()
        engine.stop()


def test_runner_when_garbage_then_dead_lettered_with_the_schema_reason_and_the_rest_acked(tmp_path):
    engine = EngineProcess(tmp_path, risk=FAST_RISK).start()
    good = payloads(5)
    garbage = [b"\x00\xffnot json", b"[1, 2]", json.dumps({"client_order_id": "g-1", "quantity": "x"}).encode(),
               b"{" + b" " * 70_000 + b"}"]
    source = MemorySource(good + garbage)
    link = EngineLink(engine.endpoint)
    run = Run(source, link)
    try:
        wait_until(lambda: len(source.acked) + len(source.dead) == 9, 20)
        assert len(source.acked) == 5
        assert set(source.dead) == {"m5", "m6", "m7", "m8"}
        assert all(r.startswith("SCHEMA") for r in source.dead.values())
        assert "exceeds" in source.dead["m8"]
        assert engine.store().get_decision("g-1").status == "REJECTED"
    finally:
        assert run.stop() == 0
        link.close()
        engine.stop()


def test_runner_when_stopped_mid_stream_then_drains_returns_0_and_requeues_nothing_it_had_answered(tmp_path):
    engine = EngineProcess(tmp_path, risk=FAST_RISK, broker={"latency_ms": 30.0}).start()
    source = MemorySource(payloads(400))
    link = EngineLink(engine.endpoint, window=40)
    run = Run(source, link)
    try:
        wait_until(lambda: len(source.acked) >= 40, 30)
        assert run.stop() == 0
        assert link.in_flight == 0  # in-flight items were answered, not abandoned
        assert source.unacked == {}  # every received message was settled: acked or back on the queue
        assert len(source.acked) + len(source.ready) == 400
        assert len(source.acked) < 400
        store = engine.store()
        for msg_id, d in source.acked.items():
            assert store.get_decision(d["client_order_id"]).status == d["status"]
    finally:
        link.close()
        engine.stop()


@pytest.mark.parametrize("outcome, settled", [
    (Outcome(decision={"client_order_id": "x", "status": "FILLED"}), "ack"),
    (Outcome(decision={"client_order_id": "x", "status": "PENDING", "reasons": ["BROKER_PENDING: x"]}), "requeue"),
    (Outcome(error="ENGINE_UNAVAILABLE: no answer"), "requeue"),
    (Outcome(decision={"client_order_id": "x", "status": "REJECTED", "reasons": ["SCHEMA: bad"]}), "dead_letter"),
    (Outcome(decision={"client_order_id": "x", "status": "REJECTED",
                       "reasons": ["DUPLICATE_ID_MISMATCH: x"]}), "dead_letter"),
    (Outcome(decision={"client_order_id": "x", "status": "REJECTED", "reasons": ["ORDER_RATE: x"]}), "ack"),
])
def test_runner_settle_when_outcome_given_then_one_place_decides(outcome, settled):
    source = MemorySource([b"{}"])
    [msg] = source.receive(1, 0)
    runner = Runner(source, link=None)  # _settle needs no link
    runner._settle(msg, [outcome])
    assert runner.settled[settled] == 1 and sum(runner.settled.values()) == 1
    assert {"ack": len(source.acked), "requeue": len(source.ready), "dead_letter": len(source.dead)}[settled] == 1
