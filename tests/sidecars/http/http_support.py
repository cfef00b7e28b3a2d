"""The real `wojak sidecar http` as a subprocess, for the HTTP sidecar's tests."""
from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.ports import free_port

ADMIN_TOKEN = "test-admin-token-7f3a"
FAST_RISK = {"max_orders_per_second": 1_000_000, "max_position_lots": 100_000, "max_gross_exposure": 1e15}


class HttpSidecar:
    def __init__(self, config: Path, workdir: Path, env: dict[str, str] | None = None, tls_ca: Path | None = None) -> None:
        self.config = config
        self.dir = Path(workdir)
        self.port = free_port()
        self.tls_ca = tls_ca  # the CA's PEM file when the config sets tls_cert/tls_key
        scheme = "https" if tls_ca else "http"
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.env = dict(os.environ, WOJAK_HTTP_LISTEN=f"127.0.0.1:{self.port}", WOJAK_ADMIN_TOKEN=ADMIN_TOKEN,
                        **(env or {}))
        self.log = self.dir / f"sidecar-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "HttpSidecar":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "wojak.cli", "sidecar", "http", "--config",
                                          str(self.config)], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sidecar not listening within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def client(self, **kw) -> httpx.Client:
        verify: bool | ssl.SSLContext = True
        if self.tls_ca is not None:
            verify = ssl.create_default_context(cafile=str(self.tls_ca))
        return httpx.Client(base_url=self.base, timeout=30, verify=verify, **kw)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
