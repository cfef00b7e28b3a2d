"""Benchmark: orders through a Kafka-protocol broker (Tansu), the `wojak sidecar kafka` process and
the engine.

    python -m bench.sidecar_kafka [N]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from confluent_kafka import Producer

from bench.sidecar_bench import Result, measure
from tests.support.kafka_server import start_kafka

TOPIC = "bench-orders"


def main(n: int = 5000) -> Result:
    work = Path(tempfile.mkdtemp(prefix="wojak-bench-kafka-"))
    server = start_kafka(work)
    try:
        server.create_topic(TOPIC, partitions=3)
        server.create_topic(f"{TOPIC}.dlq", partitions=1)

        def publish(payloads: list[bytes]) -> None:
            p = Producer({"bootstrap.servers": server.bootstrap, "enable.idempotence": True, "acks": "all",
                          "linger.ms": 5})
            for i, body in enumerate(payloads):
                p.produce(TOPIC, value=body, key=str(i).encode())
                p.poll(0)
            if p.flush(60):
                raise RuntimeError("kafka bench: not every order was acknowledged by the broker")

        env = {"WOJAK_KAFKA_BOOTSTRAP": server.bootstrap, "WOJAK_KAFKA_TOPICS": TOPIC,
               "WOJAK_KAFKA_GROUP": "bench", "WOJAK_KAFKA_SESSION_TIMEOUT_MS": "6000",
               "WOJAK_KAFKA_HEARTBEAT_MS": "500", "WOJAK_WINDOW": "200"}
        return measure("kafka", publish, env, n, workdir=str(work / "run"))
    finally:
        server.stop()


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000).line())
