"""Fixtures for the AWS sidecars: one real moto server for the session; the engine, the symbol and the
real `wojak sidecar <source>` processes come from the shared fixtures."""
from __future__ import annotations

import pytest

from tests.support.moto_server import MotoUnavailable, start_moto
from tests.support.sidecar_fixtures import engine, sidecars, symbol  # noqa: F401 (fixtures)
from tests.support.sidecar_fixtures import skip_or_fail_in_ci


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    try:
        server = start_moto(log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    except MotoUnavailable as e:
        skip_or_fail_in_ci("the moto server", str(e))
    yield server
    server.stop()


@pytest.fixture
def engine_sections() -> dict:
    """Only the rate limit raised: position and exposure limits stay at the engine's defaults here."""
    return {"risk": {"max_orders_per_second": 1_000_000}, "broker": {"fill_probability": 1.0, "seed": 11}}
