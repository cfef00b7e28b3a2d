"""Fixtures for the RabbitMQ sidecar: one private RabbitMQ node per session, fresh queues per test; the
engine and the real `wojak sidecar rabbitmq` process come from the shared fixtures."""
from __future__ import annotations

import uuid

import pytest

from tests.sidecars.rabbitmq.rabbitmq_helpers import Lane
from tests.support import rabbitmq_server
from tests.support.sidecar_fixtures import engine, engine_sections, sidecars, symbol  # noqa: F401 (fixtures)
from tests.support.sidecar_fixtures import session_server


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory):
    yield from session_server("RabbitMQ", rabbitmq_server.available(),
                              lambda: rabbitmq_server.start_rabbitmq(tmp_path_factory.mktemp("rabbitmq")))


@pytest.fixture
def sidecar_source() -> str:
    return "rabbitmq"


@pytest.fixture
def lane(rabbitmq) -> Lane:
    lane = Lane(rabbitmq, f"orders-{uuid.uuid4().hex[:10]}")
    lane.declare()
    return lane
