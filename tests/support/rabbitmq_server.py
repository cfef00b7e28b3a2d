"""A private RabbitMQ node on 127.0.0.1 for tests and benchmarks (Debian's `rabbitmq-server`).

    server = start_rabbitmq(tmp_dir)   # free AMQP/dist/epmd ports, its own mnesia, logs and cookie
    server.url                          # amqp://guest:guest@127.0.0.1:PORT/%2F
    server.queue_counts("orders")       # (ready, unacked) as the broker itself sees them
    server.stop()

Everything the node writes lives under the given directory, and it listens on ports nobody else
uses (its own epmd too), so it never collides with a system instance or another test session.
The node runs as the current user straight from /usr/lib/rabbitmq/bin (the /usr/sbin wrapper would
`su rabbitmq`, which cannot read a private temp dir).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

RABBITMQ_BIN = Path(os.environ.get("WOJAK_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


class ServerMissing(RuntimeError):
    """The server's binary is not installed (tests skip locally, fail in CI)."""


def available() -> str | None:
    """None if a node can be started here, else why not."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        return f"{RABBITMQ_BIN}/rabbitmq-server not found (apt-get install -y rabbitmq-server)"
    return None


@dataclass
class RabbitMQServer:
    base: Path
    port: int
    node: str
    env: dict[str, str]
    proc: subprocess.Popen
    epmd_port: int
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        out = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def queue_counts(self, queue: str) -> tuple[int, int]:
        """(messages ready, messages unacknowledged) for one queue, from the broker's own bookkeeping."""
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                       "messages_unacknowledged")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == queue:
                return int(parts[1]), int(parts[2])
        raise KeyError(f"queue {queue!r} not on node {self.node}")

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.proc.poll() is None:
                self.ctl("stop", timeout=30)
                self.proc.wait(30)
        except Exception:
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            # epmd daemonizes out of our process group: ask ours (on its private port) to exit.
            epmd = shutil.which("epmd")
            if epmd:
                subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.env, capture_output=True,
                               timeout=10, check=False)


def start_rabbitmq(base: Path, timeout: float = 60.0) -> RabbitMQServer:
    """Start a node and wait until pika can open a channel on it."""
    why = available()
    if why:
        raise ServerMissing(why)
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    node = f"wojak{port}@localhost"
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text("loopback_users = none\nlog.console = false\n")
    env = dict(os.environ,
               HOME=str(base),  # the Erlang cookie goes to $HOME/.erlang.cookie
               RABBITMQ_NODENAME=node,
               RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
               RABBITMQ_NODE_PORT=str(port),
               RABBITMQ_DIST_PORT=str(dist_port),
               ERL_EPMD_PORT=str(epmd_port),
               ERL_EPMD_ADDRESS="127.0.0.1",
               RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
               RABBITMQ_LOG_BASE=str(base / "log"),
               RABBITMQ_PID_FILE=str(base / "rabbit.pid"),
               RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
               RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
               RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
               RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
               RABBITMQ_PLUGINS_EXPAND_DIR=str(base / "plugins-expand"),
               RABBITMQ_CTL_DIST_PORT_MIN=str(dist_port + 1000 if dist_port < 60000 else dist_port - 1000),
               )
    env["RABBITMQ_CTL_DIST_PORT_MAX"] = str(int(env["RABBITMQ_CTL_DIST_PORT_MIN"]) + 20)
    log = open(base / "server.out", "ab")
    proc = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=env, cwd=base, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = RabbitMQServer(base, port, node, env, proc, epmd_port)
    deadline = time.monotonic() + timeout
    import pika

    logging.getLogger("pika").setLevel(logging.CRITICAL)  # refused connections while it boots are expected
    params = pika.URLParameters(server.url + "?connection_attempts=1&socket_timeout=1")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited {proc.returncode}: "
                               f"{(base / 'server.out').read_text(errors='replace')[-3000:]}")
        try:
            pika.BlockingConnection(params).close()
            return server
        except Exception:
            time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"rabbitmq-server not up in {timeout}s: {(base / 'server.out').read_text(errors='replace')[-3000:]}")
