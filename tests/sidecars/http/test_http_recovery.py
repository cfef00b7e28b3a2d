"""Failures under HTTP load: the engine killed -9 and restarted; the sidecar drained by SIGTERM.

Clients behave as the API tells them: a 503 or a broken connection means "not decided, resend the
same order". In the end every order has exactly one recorded decision, every 200 a client saw is
that decision, and the sandbox broker was called at most once per order.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
from http_support import FAST_RISK, HttpSidecar

from tests.support.engine_proc import EngineProcess, nifty_fut


@dataclass
class Load:
    """Client threads sending a fixed list of orders, each resent until it gets a final answer."""

    base: str
    orders: list[dict]
    threads: int = 4
    answers: dict[str, dict] = field(default_factory=dict)  # client_order_id -> 200 body
    answered_at: dict[str, float] = field(default_factory=dict)
    retries: int = 0
    stop_on_refused: bool = False
    refused: bool = False

    def run(self) -> list[threading.Thread]:
        parts = [self.orders[i::self.threads] for i in range(self.threads)]
        ts = [threading.Thread(target=self._client, args=(p,), daemon=True) for p in parts]
        for t in ts:
            t.start()
        return ts

    def _client(self, orders: list[dict]) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as c:
            for o in orders:
                while not self.refused:
                    try:
                        r = c.post("/v1/orders", json=o)
                    except httpx.ConnectError:
                        if self.stop_on_refused:  # the sidecar is gone: the rest stay unsent
                            self.refused = True
                            return
                        self.retries += 1
                        time.sleep(0.05)
                        continue
                    except httpx.TransportError:  # sent, no answer: unknown, so resend (idempotent)
                        self.retries += 1
                        continue
                    if r.status_code == 503:
                        assert r.headers["retry-after"]
                        self.retries += 1
                        time.sleep(0.05)
                        continue
                    assert r.status_code == 200, r.text
                    self.answers[o["client_order_id"]] = r.json()
                    self.answered_at[o["client_order_id"]] = time.monotonic()
                    break


def make_orders(n: int, prefix: str) -> list[dict]:
    symbol = nifty_fut()
    return [{"client_order_id": f"{prefix}-{i}", "symbol": symbol, "side": "BUY" if i % 2 else "SELL",
             "quantity": 65, "price": 26000.0, "account": f"a{i % 7}"} for i in range(n)]


def assert_each_decided_once(engine: EngineProcess, orders: list[dict], answers: dict[str, dict]) -> None:
    store = engine.store()
    calls = engine.broker_calls()
    for o in orders:
        coid = o["client_order_id"]
        d = store.get_decision(coid)
        assert d is not None, f"{coid} has no recorded decision"
        if coid in answers:  # what the client was told is what is recorded
            assert answers[coid]["status"] == d.status
            assert answers[coid].get("trade_id") == d.trade_id
        assert calls.get(coid, 0) == (1 if d.status in ("FILLED", "FAILED") else 0), coid
        assert len(store.trades(coid)) == (1 if d.status == "FILLED" else 0)


def wait_until(pred, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_engine_killed_under_http_load_then_clients_retry_and_every_order_is_decided_once(tmp_path):
    # Paced (a broker call takes 20 ms), so the kill lands mid-stream however fast the engine is.
    engine = EngineProcess(tmp_path, risk=FAST_RISK, http={"timeout_s": 2.0}, broker={"latency_ms": 20.0}).start()
    sidecar = HttpSidecar(engine.config, tmp_path).start()
    orders = make_orders(300, f"rs-{uuid.uuid4().hex[:6]}")
    load = Load(sidecar.base, orders)
    try:
        threads = load.run()
        wait_until(lambda: len(load.answers) >= 80, 60)
        engine.kill()
        killed_at = len(load.answers)
        time.sleep(0.5)
        engine.start()
        for t in threads:
            t.join(120)
        assert len(load.answers) == len(orders)
        assert killed_at < len(orders)  # the kill landed mid-stream
        assert_each_decided_once(engine, orders, load.answers)
    finally:
        load.refused = True
        assert sidecar.stop() == 0
        engine.stop()


def test_sidecar_sigterm_under_load_then_in_flight_requests_answered_exit_0_and_nothing_lost(tmp_path):
    # A slow broker keeps requests in flight when the signal lands.
    engine = EngineProcess(tmp_path, risk=FAST_RISK, broker={"latency_ms": 40.0}).start()
    sidecar = HttpSidecar(engine.config, tmp_path).start()
    orders = make_orders(300, f"dr-{uuid.uuid4().hex[:6]}")
    load = Load(sidecar.base, orders, threads=6, stop_on_refused=True)
    threads = load.run()
    wait_until(lambda: len(load.answers) >= 40, 60)
    signalled_at = time.monotonic()
    sidecar.signal(signal.SIGTERM)
    try:
        assert sidecar.wait(30) == 0
        for t in threads:
            t.join(30)
        assert any(at > signalled_at for at in load.answered_at.values())  # in-flight ones were finished
        assert len(load.answers) < len(orders)  # the signal landed mid-stream
        # Nothing lost: what was answered is recorded; the rest is resent by the clients to a new sidecar.
        second = HttpSidecar(engine.config, tmp_path).start()
        rest = [o for o in orders if o["client_order_id"] not in load.answers]
        again = Load(second.base, rest, threads=16)
        for t in again.run():
            t.join(120)
        assert second.stop() == 0
        assert len(again.answers) == len(rest)
        assert_each_decided_once(engine, orders, {**again.answers, **load.answers})
    finally:
        load.refused = True
        sidecar.stop()
        engine.stop()
