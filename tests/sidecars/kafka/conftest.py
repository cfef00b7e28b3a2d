"""Fixtures for the Kafka sidecar: one Tansu broker per session, fresh topics and a fresh consumer
group per test; the engine and the real `wojak sidecar kafka` process come from the shared fixtures."""
from __future__ import annotations

import uuid

import pytest

from tests.sidecars.kafka.kafka_helpers import Lane
from tests.support import kafka_server
from tests.support.sidecar_fixtures import engine, engine_sections, sidecars, symbol  # noqa: F401 (fixtures)
from tests.support.sidecar_fixtures import session_server


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    yield from session_server("the Kafka broker", kafka_server.available(),
                              lambda: kafka_server.start_kafka(tmp_path_factory.mktemp("tansu")))


@pytest.fixture
def sidecar_source() -> str:
    return "kafka"


@pytest.fixture
def lane(kafka) -> Lane:
    lane = Lane(kafka, f"orders-{uuid.uuid4().hex[:10]}")
    lane.create()
    return lane
