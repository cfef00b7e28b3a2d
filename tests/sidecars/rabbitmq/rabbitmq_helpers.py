"""Helpers for the RabbitMQ sidecar tests: the sidecar process, a test lane of queues, polling."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pika

from sidecars.rabbitmq import declare_topology
from tests.support.engine_proc import EngineProcess
from tests.support.rabbitmq_server import RabbitMQServer


class Sidecar:
    """The real `wojak sidecar rabbitmq` process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = dict(os.environ, **env)
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sidecar":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "wojak.cli", "sidecar", "rabbitmq"], env=self.env,
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
