"""Fixtures for the engine tests: real `wojak engine` processes (ZeroMQ + SQLite + sandbox broker) on
configs written per scenario, and the `store` fixture every store backend's contract runs against."""
from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine_testkit import SIM_START, write_instruments  # noqa: E402
from tests.support.engine_proc import EngineProcess  # noqa: E402

# Limits sized so each scenario in the gate suite breaches exactly the limit it is about.
GATE_RISK: dict[str, Any] = {
    "max_order_lots": 30,
    "max_notional": 1_000_000.0,
    "price_band_pct": 10.0,
    "max_position_lots": 40,
    "max_gross_exposure": 2_500_000.0,
    "daily_loss_limit": 5_000.0,
    "mtm_refresh_ms": 0,  # revalue at every batch: a tick counts for the next order at once
}

StartEngine = Callable[..., EngineProcess]


@pytest.fixture(scope="session")
def start_engine(tmp_path_factory) -> StartEngine:
    """start_engine(name, **sections): a running engine on the test instrument master and simulated day.

    Sections override the defaults (fill_probability 1, the simulated day; the instrument master is
    laid out around the simulated day); launch=False only prepares it. Every engine made here is
    SIGKILLed at the end of the session if a test left it running.
    """
    started: list[EngineProcess] = []

    def start(name: str, launch: bool = True, **sections: dict[str, Any]) -> EngineProcess:
        workdir = tmp_path_factory.mktemp(name)
        simulated_start = sections.get("engine", {}).get("simulated_start", SIM_START)
        day = dt.datetime.fromisoformat(simulated_start).date()
        csv = write_instruments(workdir / "instruments.csv", day)
        cfg: dict[str, dict[str, Any]] = {
            "engine": {"simulated_start": SIM_START},
            "broker": {"fill_probability": 1.0},
            "instruments": {"path": str(csv)},
        }
        for section, keys in sections.items():
            cfg.setdefault(section, {}).update(keys)
        eng = EngineProcess(workdir, **cfg)
        started.append(eng)
        return eng.start() if launch else eng

    yield start
    for eng in started:
        eng.kill()


@pytest.fixture(scope="session")
def gate_engine(start_engine) -> EngineProcess:
    """One engine for the gate scenarios: fills everything, escalations to its log file."""
    return start_engine("gate", risk=GATE_RISK)


@pytest.fixture(scope="session")
def gate(gate_engine):
    with gate_engine.client() as c:
        yield c


# ---------------------------------------------------------------------------------------------
# the store contract: one suite, every backend


def _couchbase_store():
    if not os.environ.get("COUCHBASE_CONNSTR"):
        pytest.skip("Couchbase contract: no cluster can run here; set COUCHBASE_CONNSTR (with COUCHBASE_USERNAME, "
                    "COUCHBASE_PASSWORD, COUCHBASE_BUCKET) to run the store contract against one")
    from engine.store.couchbase import CouchbaseStore  # lazily: the backend and its SDK are optional

    # COUCHBASE_CONNSTR/USERNAME/PASSWORD/BUCKET (and optional COUCHBASE_SCOPE), schema created if missing
    return CouchbaseStore.from_env()


@pytest.fixture(params=["sqlite", "couchbase"])
def store(request, tmp_path):
    if request.param == "sqlite":
        from engine.store.sqlite import SqliteStore

        s = SqliteStore(tmp_path / "contract.db")
    else:
        s = _couchbase_store()
    yield s
    s.close()
