"""Fixtures for the AWS sidecars: one real moto server for the session, a real engine per test."""
from __future__ import annotations

import os

import pytest

from tests.support.engine_proc import EngineProcess, nifty_fut
from tests.support.moto_server import MotoUnavailable, start_moto


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    try:
        server = start_moto(log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    except MotoUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"moto server required in CI: {e}")
        pytest.skip(f"no moto server here: {e}")
    yield server
    server.stop()


@pytest.fixture
def symbol() -> str:
    return nifty_fut()


@pytest.fixture
def engine(tmp_path, symbol):
    """A real engine; every order fills (fill_probability 1.0) so outcomes are deterministic."""
    eng = EngineProcess(tmp_path / "engine", risk={"max_orders_per_second": 1_000_000},
                        broker={"fill_probability": 1.0, "seed": 11})
    eng.start()
    with eng.client() as c:
        assert c.call("tick", [{"symbol": symbol, "ltp": 26000.0}]).ok
    yield eng
    eng.stop()
