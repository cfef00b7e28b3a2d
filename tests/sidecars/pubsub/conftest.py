"""Fixtures for the Pub/Sub sidecar: one real emulator per session, fresh topics and subscriptions per
test, a real engine per test, and the real `wojak sidecar pubsub` process."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

from tests.support import pubsub_emulator
from tests.sidecars.pubsub.pubsub_helpers import Sidecar
from tests.support.engine_proc import EngineProcess, nifty_fut

HERE = os.path.dirname(__file__)


def pytest_collection_modifyitems(config, items):
    # google-api-core warns on import about Python versions it will drop in 2027: noise here.
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.filterwarnings(r"ignore::FutureWarning:google\..*"))

RISK = {"max_orders_per_second": 1_000_000, "max_position_lots": 100_000, "max_gross_exposure": 1e15}


@pytest.fixture(scope="session")
def emulator():
    why = pubsub_emulator.missing_reason()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the Pub/Sub emulator cannot run: {why}")
        pytest.skip(why)
    emu = pubsub_emulator.start()
    yield emu
    emu.stop()


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
