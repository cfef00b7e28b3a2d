"""Helpers for the Kafka sidecar tests: a test lane of topics and its consumer group."""
from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import Producer

from tests.support.engine_proc import EngineProcess
from tests.support.kafka_server import KafkaServer


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

    drain_poll_s = 0.2  # how often `drained` is worth asking

    def drained(self) -> bool:
        """Every partition committed to its end."""
        return self.all_committed()

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
