"""Fixtures for the Pub/Sub sidecar: one real emulator per session, fresh topics and subscriptions per
test; the engine and the real `wojak sidecar pubsub` process come from the shared fixtures."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

from tests.support import pubsub_emulator
from tests.support.engine_proc import EngineProcess
from tests.support.sidecar_fixtures import engine, engine_sections, sidecars, symbol  # noqa: F401 (fixtures)
from tests.support.sidecar_fixtures import session_server

HERE = os.path.dirname(__file__)


def pytest_collection_modifyitems(config, items):
    # google-api-core warns on import about Python versions it will drop in 2027: noise here.
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.filterwarnings(r"ignore::FutureWarning:google\..*"))


@pytest.fixture(scope="session")
def emulator():
    yield from session_server("the Pub/Sub emulator", pubsub_emulator.missing_reason(), pubsub_emulator.start)


@pytest.fixture
def sidecar_source() -> str:
    return "pubsub"


@dataclass
class Lane:
    """One test's topics: orders -> subscription (10 s ack deadline), and the dead-letter topic with a
    subscription the test reads it through."""

    emu: pubsub_emulator.Emulator
    topic: str
    subscription: str
    dlq_topic: str
    dlq_subscription: str

    def publish(self, payloads: list[bytes], **attributes: str) -> list[str]:
        return self.emu.publish(self.topic, payloads, **attributes)

    def sidecar_env(self, engine: EngineProcess, **extra: str) -> dict[str, str]:
        return {**self.emu.env(), "WOJAK_ENGINE_ENDPOINT": engine.endpoint,
                "WOJAK_PUBSUB_PROJECT": self.emu.project, "WOJAK_PUBSUB_SUBSCRIPTION": self.subscription,
                "WOJAK_PUBSUB_DLQ_TOPIC": self.dlq_topic, **extra}

    def leftover(self) -> list:
        """What Pub/Sub would still deliver on the orders subscription (acked by this read)."""
        return self.emu.pull_all(self.subscription)

    def dead_letters(self) -> list:
        return self.emu.pull_all(self.dlq_subscription)


@pytest.fixture
def lane(emulator) -> Lane:
    tag = uuid.uuid4().hex[:10]
    lane = Lane(emulator, f"orders-{tag}", f"orders-{tag}-sidecar", f"orders-{tag}-dlq", f"orders-{tag}-dlq-read")
    emulator.create_topic(lane.topic)
    emulator.create_topic(lane.dlq_topic)
    emulator.create_subscription(lane.topic, lane.subscription, ack_deadline_s=10)
    emulator.create_subscription(lane.dlq_topic, lane.dlq_subscription, ack_deadline_s=10)
    return lane
