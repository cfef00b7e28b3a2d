"""Fixtures for the Kafka sidecar: one Tansu broker per session, fresh topics and a fresh consumer
group per test, a real engine per test, and the real `wojak sidecar kafka` process."""
from __future__ import annotations

import os
import uuid

import pytest

from tests.sidecars.kafka.kafka_helpers import Lane, Sidecar
from tests.support import kafka_server
from tests.support.engine_proc import EngineProcess, nifty_fut

RISK = {"max_orders_per_second": 1_000_000, "max_position_lots": 100_000, "max_gross_exposure": 1e15}


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    why = kafka_server.available()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the Kafka broker cannot run: {why}")
        pytest.skip(why)
    server = kafka_server.start_kafka(tmp_path_factory.mktemp("tansu"))
    yield server
    server.stop()


@pytest.fixture
def lane(kafka) -> Lane:
    lane = Lane(kafka, f"orders-{uuid.uuid4().hex[:10]}")
    lane.create()
    return lane


@pytest.fixture
def engine(tmp_path):
    eng = EngineProcess(tmp_path / "engine", risk=RISK, broker={"fill_probability": 1.0})
    eng.start()
    yield eng
    eng.stop() if eng.alive else None


@pytest.fixture
def symbol(engine) -> str:
    """The front-month NIFTY future, with a reference price so LIMIT orders pass the price band."""
    sym = nifty_fut()
    with engine.client() as c:
        assert c.call("tick", [{"symbol": sym, "ltp": 26000.0}]).ok
    return sym


@pytest.fixture
def sidecars(tmp_path):
    started: list[Sidecar] = []

    def make(env: dict[str, str]) -> Sidecar:
        s = Sidecar(env, tmp_path / f"sidecar-{len(started)}.log").start()
        started.append(s)
        return s

    yield make
    for s in started:
        if s.alive:
            s.kill()
