"""Google's Pub/Sub emulator on 127.0.0.1, for tests and benchmarks.

    emu = start()                       # a fresh emulator on a free port (Java, ~1.5 s)
    emu.create_topic("orders"); emu.create_subscription("orders", "orders-sidecar", ack_deadline_s=10)
    emu.publish("orders", [b'{"client_order_id": ...}'])
    emu.env()                           # {"PUBSUB_EMULATOR_HOST": "127.0.0.1:PORT"} for a sidecar process
    emu.pull_all("orders-sidecar")      # what is still deliverable (synchronous pull)
    emu.stop()

The emulator ships with the Google Cloud SDK (component `pubsub-emulator`) and cannot be installed from a
package registry. `find()` looks for it in $PUBSUB_EMULATOR_BIN, on PATH, then in the SDK that owns the
`gcloud` on PATH (or $CLOUDSDK_ROOT_DIR). It needs a Java runtime (11+).
The clients made here talk to the emulator over an explicit insecure channel, so the test process never
sets PUBSUB_EMULATOR_HOST for everyone else.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

BIN_NAME = "cloud-pubsub-emulator"
PROJECT = "wojak-test"


def find() -> Path | None:
    """The emulator's launcher script, or None."""
    explicit = os.environ.get("PUBSUB_EMULATOR_BIN")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    on_path = shutil.which(BIN_NAME)
    if on_path:
        return Path(on_path)
    roots = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:  # <sdk>/bin/gcloud, usually through a symlink
        roots.append(Path(gcloud).resolve().parent.parent)
    for root in roots:
        candidate = root / "platform" / "pubsub-emulator" / "bin" / BIN_NAME
        if candidate.is_file():
            return candidate
    return None


def missing_reason() -> str | None:
    """Why the emulator cannot run here, or None when it can."""
    if find() is None:
        return (f"Google Pub/Sub emulator ({BIN_NAME}) not found: install the Cloud SDK component "
                "`pubsub-emulator` or set PUBSUB_EMULATOR_BIN")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "the Pub/Sub emulator needs a Java runtime (java on PATH or JAVA_HOME)"
    return None


@dataclass
class Emulator:
    host: str  # "127.0.0.1:PORT"
    proc: subprocess.Popen
    log_path: Path
    project: str = PROJECT
    _clients: dict = field(default_factory=dict)

    # -- for processes --------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host}

    # -- clients bound to this emulator ---------------------------------------------------------
    def publisher(self):
        """The shared publisher of this helper (closed by stop())."""
        if "pub" not in self._clients:
            self._clients["pub"] = self.new_publisher()
        return self._clients["pub"]

    def subscriber(self):
        """The shared subscriber of this helper (closed by stop())."""
        if "sub" not in self._clients:
            self._clients["sub"] = self.new_subscriber()
        return self._clients["sub"]

    def new_publisher(self):
        """A fresh publisher on this emulator; the caller owns it (stop() it)."""
        import grpc
        from google.cloud import pubsub_v1
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        return pubsub_v1.PublisherClient(
            transport=PublisherGrpcTransport(channel=grpc.insecure_channel(self.host)),
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01))

    def new_subscriber(self):
        """A fresh subscriber on this emulator; the caller owns it (close() it)."""
        import grpc
        from google.cloud import pubsub_v1
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(self.host)))

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, sub: str) -> str:
        return f"projects/{self.project}/subscriptions/{sub}"

    def create_topic(self, topic: str) -> str:
        path = self.topic_path(topic)
        self.publisher().create_topic(name=path)
        return path

    def create_subscription(self, topic: str, sub: str, ack_deadline_s: int = 10,
                            dead_letter_topic: str | None = None, max_delivery_attempts: int = 5) -> str:
        from google.pubsub_v1.types import DeadLetterPolicy

        path = self.subscription_path(sub)
        request = {"name": path, "topic": self.topic_path(topic), "ack_deadline_seconds": ack_deadline_s}
        if dead_letter_topic:
            request["dead_letter_policy"] = DeadLetterPolicy(dead_letter_topic=self.topic_path(dead_letter_topic),
                                                             max_delivery_attempts=max_delivery_attempts)
        self.subscriber().create_subscription(request=request)
        return path

    def publish(self, topic: str, payloads: list[bytes], **attributes: str) -> list[str]:
        """Publish and wait until every message is stored; returns the message ids in order."""
        pub = self.publisher()
        path = self.topic_path(topic)
        futures = [pub.publish(path, p, **attributes) for p in payloads]
        return [f.result(timeout=60) for f in futures]

    def pull_all(self, sub: str, ack: bool = True, wait_s: float = 1.0, max_messages: int = 1000) -> list:
        """Every message deliverable now (ReceivedMessage objects); acked when ack=True so a second
        pull does not see them again. Stops after a pull that returns nothing within wait_s."""
        client = self.subscriber()
        path = self.subscription_path(sub)
        out = []
        while True:
            try:
                resp = client.pull(request={"subscription": path, "max_messages": max_messages},
                                   timeout=wait_s, retry=None)
            except Exception as e:  # DeadlineExceeded: nothing to deliver
                if type(e).__name__ == "DeadlineExceeded":
                    break
                raise
            if not resp.received_messages:
                break
            out.extend(resp.received_messages)
            if ack:
                client.acknowledge(request={"subscription": path,
                                            "ack_ids": [m.ack_id for m in resp.received_messages]})
            else:  # give them back at once
                client.modify_ack_deadline(request={"subscription": path, "ack_deadline_seconds": 0,
                                                    "ack_ids": [m.ack_id for m in resp.received_messages]})
                break
        return out

    def stop(self) -> None:
        for client in self._clients.values():
            try:
                (client.stop if hasattr(client, "stop") else client.close)()
            except Exception:
                pass
        self._clients.clear()
        if self.proc.poll() is None:
            # The launcher script runs Java in its own session: end the whole group.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)


def start(timeout_s: float = 60.0, data_dir: str | None = None) -> Emulator:
    """Start a fresh emulator on a free port and wait until it answers; raises RuntimeError."""
    binary = find()
    why = missing_reason()
    if why or binary is None:
        raise RuntimeError(why or "Pub/Sub emulator not found")
    port = free_port()
    work = Path(data_dir or tempfile.mkdtemp(prefix="wojak-pubsub-"))
    log_path = work / "emulator.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(binary), "--host=127.0.0.1", f"--port={port}"], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=work)
    emu = Emulator(f"127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Pub/Sub emulator exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if b"Server started" in log_path.read_bytes():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return emu
            except OSError:
                pass
        time.sleep(0.05)
    emu.stop()
    raise RuntimeError(f"Pub/Sub emulator not ready in {timeout_s}s:\n{log_path.read_text()[-3000:]}")
