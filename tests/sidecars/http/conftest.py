"""Fixtures: one real engine and one real HTTP sidecar for the API tests (started once per session);
the restart, drain, TLS and CURVE tests start their own."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.engine_proc import EngineProcess, nifty_fut  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from http_support import FAST_RISK, HttpSidecar  # noqa: E402


@pytest.fixture(scope="session")
def symbol() -> str:
    return nifty_fut()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, symbol):
    """An engine and its HTTP sidecar; the NIFTY future has a last price of 26000."""
    work = tmp_path_factory.mktemp("http-api")
    engine = EngineProcess(work, risk=FAST_RISK, http={"timeout_s": 3.0, "max_body_bytes": 4096}).start()
    sidecar = HttpSidecar(engine.config, work).start()
    with engine.client() as c:
        c.call("tick", [{"symbol": symbol, "ltp": 26000.0}])
    yield engine, sidecar
    sidecar.stop()
    engine.stop()


@pytest.fixture(scope="session")
def engine(stack):
    return stack[0]


@pytest.fixture(scope="session")
def api(stack):
    with stack[1].client() as c:
        yield c
