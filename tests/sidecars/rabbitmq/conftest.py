"""Fixtures for the RabbitMQ sidecar: one private RabbitMQ node per session, fresh queues per test, a
real engine per test, and the real `wojak sidecar rabbitmq` process."""
from __future__ import annotations

import os
import uuid

import pytest

from tests.sidecars.rabbitmq.rabbitmq_helpers import Lane, Sidecar
from tests.support import rabbitmq_server
from tests.support.engine_proc import EngineProcess, nifty_fut

RISK = {"max_orders_per_second": 1_000_000, "max_position_lots": 100_000, "max_gross_exposure": 1e15}


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory):
    why = rabbitmq_server.available()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and RabbitMQ cannot run: {why}")
        pytest.skip(why)
    server = rabbitmq_server.start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    yield server
    server.stop()


@pytest.fixture
def lane(rabbitmq) -> Lane:
    lane = Lane(rabbitmq, f"orders-{uuid.uuid4().hex[:10]}")
    lane.declare()
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
