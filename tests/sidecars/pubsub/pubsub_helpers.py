"""Helpers for the Pub/Sub sidecar tests: the sidecar process and polling."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.engine_proc import EngineProcess


class Sidecar:
    """The real `wojak sidecar pubsub` process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = dict(os.environ, **env)
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sidecar":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "wojak.cli", "sidecar", "pubsub"], env=self.env,
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
