"""What every source-sidecar suite shares: the pytest fixtures (a real engine per test, the traded symbol,
the real `wojak sidecar <source>` processes), the skip-here-but-fail-in-CI rule for session servers, and
the waits and checks the suites' tests are made of.

A suite's conftest imports the fixtures (`from tests.support.sidecar_fixtures import engine, ...`) and
defines `sidecar_source`; it overrides `engine_sections` when its engine needs another config.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterator, NoReturn

import pytest

from bench.sidecar_bench import orders
from wojak.procs import EngineProcess, SidecarProcess, nifty_fut

# High enough that no stream in a test trips a rate, position or exposure limit.
RISK = {"max_orders_per_second": 1_000_000, "max_position_lots": 100_000, "max_gross_exposure": 1e15}
REFERENCE_LTP = 26000.0


def skip_or_fail_in_ci(what: str, why: str) -> NoReturn:
    """A session server that cannot run here: a skip with the reason, but a failure in CI (CI=true)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {what} cannot run: {why}")
    pytest.skip(f"{what} cannot run here: {why}")


def session_server(what: str, why_not: str | None, start: Callable[[], Any]) -> Iterator[Any]:
    """The body of a session fixture: `start()` the server, yield it, stop it; or, when `why_not` says it
    cannot run here, skip (fail in CI). Use as `yield from session_server(...)`."""
    if why_not:
        skip_or_fail_in_ci(what, why_not)
    server = start()
    yield server
    server.stop()


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture
def engine_sections() -> dict[str, dict[str, Any]]:
    """The engine's config sections; every order fills (fill_probability 1.0) so outcomes are deterministic."""
    return {"risk": RISK, "broker": {"fill_probability": 1.0}}


@pytest.fixture
def symbol() -> str:
    """The front-month NIFTY future (the `engine` fixture gives it a reference price)."""
    return nifty_fut()


@pytest.fixture
def engine(tmp_path, engine_sections, symbol):
    """A real engine per test, with a reference tick for `symbol` so LIMIT orders pass the price band."""
    eng = EngineProcess(tmp_path / "engine", **engine_sections)
    eng.start()
    with eng.client() as c:
        assert c.call("tick", [{"symbol": symbol, "ltp": REFERENCE_LTP}]).ok
    yield eng
    if eng.alive:
        eng.stop()


@pytest.fixture
def sidecars(tmp_path, sidecar_source):
    """Start the real `wojak sidecar <sidecar_source>` with an env; any still running at the end are killed.
    `sidecar_source` is the suite's own fixture (its conftest's, or a test module's)."""
    started: list[SidecarProcess] = []

    def make(env: dict[str, str]) -> SidecarProcess:
        s = SidecarProcess(sidecar_source, env, tmp_path / f"sidecar-{len(started)}.log").start()
        started.append(s)
        return s

    yield make
    for s in started:
        if s.alive:
            s.kill()


# -- waiting and reading the engine's record ----------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float, what: str, sidecar: SidecarProcess | None = None,
             every: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy and return it; fail early (with its log) if `sidecar` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if sidecar is not None and not sidecar.alive:
            raise AssertionError(f"sidecar exited ({sidecar.proc.returncode}) while waiting for {what}:\n{sidecar.tail()}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" +
                         (f"\nsidecar log:\n{sidecar.tail()}" if sidecar else ""))


def wait_stream_started(engine: EngineProcess, sidecar: SidecarProcess, at_least: int, every: float = 0.01) -> None:
    wait_for(lambda: decided(engine) >= at_least, 30, "the stream to start", sidecar, every=every)


def wait_decided_and_drained(engine: EngineProcess, lane, sidecar: SidecarProcess, n: int, timeout: float = 60,
                             drain_timeout: float = 20) -> None:
    """Wait for n decisions, then for `lane.drained()`: the broker holds nothing unsettled."""
    wait_for(lambda: decided(engine) == n, timeout, f"{n} decisions", sidecar)
    wait_for(lane.drained, drain_timeout, "everything settled at the broker", sidecar, every=lane.drain_poll_s)


def decided(engine: EngineProcess) -> int:
    """How many orders the engine has recorded a decision for."""
    store = engine.store()
    try:
        return store.counts()["orders"]
    finally:
        store.close()


def decision(engine: EngineProcess, client_order_id: str):
    store = engine.store()
    try:
        return store.get_decision(client_order_id)
    finally:
        store.close()


def decisions(engine: EngineProcess) -> dict[str, Any]:
    store = engine.store()
    try:
        return {d.client_order_id: d for d in store.decisions(limit=1_000_000)}
    finally:
        store.close()


def last_price(engine: EngineProcess, symbol: str) -> float | None:
    store = engine.store()
    try:
        price = store.last_prices().get(symbol)  # (ltp, ts)
        return price[0] if price else None
    finally:
        store.close()


# -- checks -------------------------------------------------------------------------------------------
def assert_executed_once_each(engine: EngineProcess, n: int) -> None:
    """Exactly n orders reached the broker, none of them twice."""
    calls = engine.broker_calls()
    assert len(calls) == n, f"{len(calls)} orders reached the broker, expected {n}"
    assert set(calls.values()) == {1}, {k: v for k, v in calls.items() if v != 1}


def assert_each_decided_once(engine: EngineProcess, ids: list[str]) -> None:
    """Every id has a recorded decision, every executed one reached the broker, and none reached it twice."""
    d = decisions(engine)
    missing = [i for i in ids if i not in d]
    assert not missing, f"{len(missing)} orders without a decision, e.g. {missing[:3]}"
    calls = engine.broker_calls()
    assert set(calls) >= {i for i in ids if d[i].status in ("FILLED", "FAILED")}
    assert all(v == 1 for v in calls.values()), {k: v for k, v in calls.items() if v != 1}


def assert_stream_decided_once(engine: EngineProcess, prefix: str, n: int) -> None:
    """Orders prefix-0 .. prefix-(n-1): each decided, nothing else and nothing pending, each executed once."""
    store = engine.store()
    try:
        counts = store.counts()
        missing = [i for i in range(n) if store.get_decision(f"{prefix}-{i}") is None]
    finally:
        store.close()
    assert missing == [] and counts["orders"] == n and counts["pending"] == 0, (missing[:10], counts)
    assert_executed_once_each(engine, n)


def garbage(symbol: str) -> dict[bytes, str]:
    """Four messages that can never be orders, each with the start of the reason it is dead-lettered with:
    not JSON, the wrong schema (its `client_order_id` is "wrong-1"), binary, and oversized."""
    return {
        b"this is not json {": "SCHEMA: not JSON",
        json.dumps({"client_order_id": "wrong-1", "symbol": symbol, "side": "HOLD", "quantity": 65}).encode():
            "SCHEMA",
        bytes(range(256)) * 4: "SCHEMA: not JSON",
        json.dumps({"client_order_id": "big-1", "pad": "x" * (65 * 1024)}).encode(): "SCHEMA: message of",
    }


def market_order(client_order_id: str, symbol: str) -> bytes:
    return json.dumps({"client_order_id": client_order_id, "symbol": symbol, "side": "BUY", "quantity": 65,
                       "order_type": "MARKET", "account": "t"}).encode()


def batch_message(n: int, symbol: str, prefix: str) -> bytes:
    """One message carrying n orders (prefix-0 ..) as a JSON array."""
    return json.dumps([json.loads(o) for o in orders(n, symbol, prefix)]).encode()


def wait_filled_at(engine: EngineProcess, sidecar: SidecarProcess, client_order_id: str, price: float) -> None:
    d = wait_for(lambda: decision(engine, client_order_id), 20, f"the decision on {client_order_id}", sidecar)
    assert d.status == "FILLED", d
    assert d.fill_price == price


def assert_exits_2_naming_missing(sidecars, env: dict[str, str], name: str) -> None:
    """Started with the required setting `name` empty, the sidecar exits 2 and its log names the setting."""
    car = sidecars({**env, name: ""})
    assert car.proc.wait(30) == 2
    assert name in car.tail()


# -- crash scenarios for a source whose lane has `publish`, `sidecar_env`, `drained` and `drain_poll_s` ---
# Each takes `check(done)`: the source's own look at its broker right after the interruption, with the
# number of decisions the engine had recorded by then.
def _no_check(done: int) -> None:
    return None


def paced(engine: EngineProcess) -> None:
    """Every broker call takes 20 ms: with 20 in flight, 300 orders take at least 0.3 s, so an
    interruption after the first 60 lands mid-stream however fast the engine is."""
    engine.stop()
    engine.configure(broker={"latency_ms": 20.0}).start()


def _stream_started(engine: EngineProcess, lane, sidecars, symbol: str, prefix: str, n: int, window: str,
                    at_least: int) -> SidecarProcess:
    lane.publish(orders(n, symbol, prefix))
    car = sidecars(lane.sidecar_env(engine, WOJAK_WINDOW=window))
    wait_stream_started(engine, car, at_least)
    return car


def _finished_once(engine: EngineProcess, lane, sidecar: SidecarProcess, n: int) -> None:
    wait_decided_and_drained(engine, lane, sidecar, n)
    assert_executed_once_each(engine, n)


def stream_through_engine_kill(engine: EngineProcess, lane, sidecars, symbol: str,
                               check: Callable[[int], None] = _no_check, n: int = 300) -> None:
    """The engine SIGKILLed mid-stream and restarted: every order decided, none executed twice."""
    paced(engine)
    car = _stream_started(engine, lane, sidecars, symbol, "ek", n, window="20", at_least=60)
    engine.kill()
    assert decided(engine) < n, "the engine finished before it was killed: the test proved nothing"
    check(decided(engine))
    engine.start()
    _finished_once(engine, lane, car, n)


def stream_through_sidecar_kill(engine: EngineProcess, lane, sidecars, symbol: str,
                                check: Callable[[int], None] = _no_check, n: int = 300) -> None:
    """The sidecar SIGKILLed mid-stream and another started: every order decided, none executed twice."""
    paced(engine)
    first = _stream_started(engine, lane, sidecars, symbol, "sk", n, window="20", at_least=60)
    first.kill()
    done = decided(engine)
    assert done < n, "the sidecar finished before it was killed: the test proved nothing"
    check(done)
    _finished_once(engine, lane, sidecars(lane.sidecar_env(engine)), n)


def stream_through_sigterm(engine: EngineProcess, lane, sidecars, symbol: str,
                           check: Callable[[int], None] = _no_check, n: int = 300) -> None:
    """The sidecar stopped with SIGTERM mid-stream (exit 0) and started again: nothing lost."""
    car = _stream_started(engine, lane, sidecars, symbol, "st", n, window="10", at_least=30)
    assert car.terminate() == 0, car.tail()
    check(decided(engine))
    _finished_once(engine, lane, sidecars(lane.sidecar_env(engine)), n)
