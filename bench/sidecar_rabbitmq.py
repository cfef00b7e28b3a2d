"""Benchmark: orders through a real RabbitMQ node, the `wojak sidecar rabbitmq` process and the engine.

    python -m bench.sidecar_rabbitmq [N]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pika

from bench.sidecar_bench import Result, measure
from sidecars.rabbitmq import declare_topology
from tests.support.rabbitmq_server import start_rabbitmq

QUEUE = "bench-orders"


def main(n: int = 5000) -> Result:
    work = Path(tempfile.mkdtemp(prefix="wojak-bench-rabbitmq-"))
    server = start_rabbitmq(work / "rabbitmq")
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        declare_topology(ch, QUEUE, f"{QUEUE}.dlx", f"{QUEUE}.dlq")
        ch.confirm_delivery()

        def publish(payloads: list[bytes]) -> None:
            props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
            for body in payloads:
                ch.basic_publish("", QUEUE, body, props, mandatory=True)

        env = {"WOJAK_RABBITMQ_URL": server.url, "WOJAK_RABBITMQ_QUEUE": QUEUE, "WOJAK_WINDOW": "200"}
        try:
            return measure("rabbitmq", publish, env, n, workdir=str(work / "run"))
        finally:
            conn.close()
    finally:
        server.stop()


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000).line())
