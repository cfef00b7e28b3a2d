"""Helpers for the RabbitMQ sidecar tests: a test lane of queues."""
from __future__ import annotations

from dataclasses import dataclass

import pika

from sidecars.rabbitmq import declare_topology
from tests.support.engine_proc import EngineProcess
from tests.support.rabbitmq_server import RabbitMQServer


@dataclass
class Lane:
    """One test's queues: orders (+ ticks) with their dead-letter exchange and queue."""

    server: RabbitMQServer
    queue: str

    @property
    def dlx(self) -> str:
        return f"{self.queue}.dlx"

    @property
    def dlq(self) -> str:
        return f"{self.queue}.dlq"

    @property
    def tick_queue(self) -> str:
        return f"{self.queue}.ticks"

    def declare(self) -> None:
        with self.channel() as ch:
            declare_topology(ch, self.queue, self.dlx, self.dlq, self.tick_queue)

    def channel(self):
        return _Channel(self.server.url)

    def publish(self, payloads: list[bytes], queue: str | None = None, ids: bool = True, **props) -> None:
        """Persistent messages with publisher confirms: when this returns the broker holds them all."""
        with self.channel() as ch:
            ch.confirm_delivery()
            for i, body in enumerate(payloads):
                p = pika.BasicProperties(delivery_mode=2, message_id=f"{self.queue}-{i}" if ids else None, **props)
                ch.basic_publish("", queue or self.queue, body, p, mandatory=True)

    drain_poll_s = 0.3  # how often `drained` is worth asking

    def drained(self) -> bool:
        """Nothing ready and nothing unacked on the orders queue."""
        return self.counts() == (0, 0)

    def counts(self, queue: str | None = None) -> tuple[int, int]:
        return self.server.queue_counts(queue or self.queue)

    def dead_letters(self) -> list[tuple[pika.BasicProperties, bytes]]:
        out = []
        with self.channel() as ch:
            while True:
                method, props, body = ch.basic_get(self.dlq, auto_ack=True)
                if method is None:
                    return out
                out.append((props, body))

    def sidecar_env(self, engine: EngineProcess, **extra: str) -> dict[str, str]:
        return {"WOJAK_ENGINE_ENDPOINT": engine.endpoint, "WOJAK_RABBITMQ_URL": self.server.url,
                "WOJAK_RABBITMQ_QUEUE": self.queue, "WOJAK_RABBITMQ_TICK_QUEUE": self.tick_queue,
                "WOJAK_WINDOW": "100", **extra}


class _Channel:
    def __init__(self, url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))

    def __enter__(self):
        return self.conn.channel()

    def __exit__(self, *exc) -> None:
        self.conn.close()
