"""Helpers for the Kafka sidecar tests: the sidecar process, a test lane of topics, polling."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer

from tests.support.engine_proc import EngineProcess
from tests.support.kafka_server import KafkaServer


class Sidecar:
    """The real `wojak sidecar kafka` process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = dict(os.environ, **env)
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sidecar":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "wojak.cli", "sidecar", "kafka"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 40.0) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Lane:
    """One test's topics (orders with several partitions, ticks, dead letters) and consumer group.

    `ends` is every partition's end offset as the producer's delivery reports gave it: Tansu 0.6's
    ListOffsets answers the last *batch's* base offset + 1, not the high watermark, so the broker's
    committed offsets are compared against these instead."""

    server: KafkaServer
    topic: str
    partitions: int = 3
    ends: dict[int, int] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return f"{self.topic}-sidecars"

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def tick_topic(self) -> str:
        return f"{self.topic}.ticks"

    def create(self) -> None:
        self.server.create_topic(self.topic, self.partitions)
        self.server.create_topic(self.dlq, 1)
        self.server.create_topic(self.tick_topic, 1)

    def publish(self, payloads: list[bytes], topic: str | None = None, headers: list | None = None) -> None:
        """Idempotent, acks=all; returns once every message is acknowledged by the broker."""
        topic = topic or self.topic
        p = Producer({"bootstrap.servers": self.server.bootstrap, "enable.idempotence": True, "acks": "all",
                      "linger.ms": 5})
        failed = []

        def delivered(err, m) -> None:
            if err is not None:
                failed.append(err)
            elif topic == self.topic:
                self.ends[m.partition()] = max(self.ends.get(m.partition(), 0), m.offset() + 1)

        for i, body in enumerate(payloads):
            p.produce(topic, value=body, key=str(i).encode(), headers=headers, on_delivery=delivered)
            p.poll(0)
        assert p.flush(30) == 0 and not failed, failed

    def committed(self) -> dict[int, int]:
        return {p: o for p, o in self.server.committed(self.group, self.topic).items() if p in self.ends}

    def all_committed(self) -> bool:
        return self.committed() == self.ends

    def uncommitted(self) -> int:
        done = self.committed()
        return sum(end - max(done.get(p, 0), 0) for p, end in self.ends.items())

    def sidecar_env(self, engine: EngineProcess, **extra: str) -> dict[str, str]:
        return {"WOJAK_ENGINE_ENDPOINT": engine.endpoint, "WOJAK_KAFKA_BOOTSTRAP": self.server.bootstrap,
                "WOJAK_KAFKA_TOPICS": self.topic, "WOJAK_KAFKA_TICK_TOPICS": self.tick_topic,
                "WOJAK_KAFKA_GROUP": self.group, "WOJAK_KAFKA_SESSION_TIMEOUT_MS": "6000",
                "WOJAK_KAFKA_HEARTBEAT_MS": "500", "WOJAK_WINDOW": "100", **extra}


def wait_for(predicate, timeout: float, what: str, sidecar: Sidecar | None = None, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if sidecar is not None and not sidecar.alive:
            raise AssertionError(f"sidecar exited ({sidecar.proc.returncode}) while waiting for {what}:\n{sidecar.tail()}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" +
                         (f"\nsidecar log:\n{sidecar.tail()}" if sidecar else ""))


def decided(engine: EngineProcess) -> int:
    store = engine.store()
    try:
        return store.counts()["orders"]
    finally:
        store.close()


def decision(engine: EngineProcess, client_order_id: str):
    store = engine.store()
    try:
        return store.get_decision(client_order_id)
    finally:
        store.close()


def last_price(engine: EngineProcess, symbol: str) -> float | None:
    store = engine.store()
    try:
        price = store.last_prices().get(symbol)  # (ltp, ts)
        return price[0] if price else None
    finally:
        store.close()


def all_once(engine: EngineProcess, n: int) -> None:
    calls = engine.broker_calls()
    assert len(calls) == n, f"{len(calls)} orders reached the broker, expected {n}"
    assert set(calls.values()) == {1}, {k: v for k, v in calls.items() if v != 1}
