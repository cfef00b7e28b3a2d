"""Real `wojak engine` processes on a generated config: for tests, benchmarks and drills.

    eng = EngineProcess(tmp_path, risk={"max_orders_per_second": 1000})
    eng.start()            # waits until it answers `health`
    eng.client()           # an EngineClient connected to it
    eng.kill()             # SIGKILL, no clean-up
    eng.start()            # same store, same broker journal: reconciliation runs
    eng.stop()             # SIGTERM, waits for a clean exit
    eng.broker_calls()     # {client_order_id: times submitted}, from the sandbox's own journal

    car = SidecarProcess("kafka", {"WOJAK_ENGINE_ENDPOINT": eng.endpoint, ...}, tmp / "kafka.log").start()
    car.kill()             # SIGKILL: whatever it held unanswered the broker redelivers
    car.terminate()        # SIGTERM: drains, returns its exit code
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.broker.sandbox import read_call_counts
from engine.client import EngineClient, EngineUnavailable
from engine.store.sqlite import SqliteStore


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dt.date):  # a TOML local date
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class EngineProcess:
    def __init__(self, workdir: Path, endpoint: str | None = None, env: dict[str, str] | None = None,
                 **sections: dict[str, Any]) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # ipc paths are limited to ~100 bytes: keep the socket name short and relative to the workdir.
        self.endpoint = endpoint or f"ipc://{self.dir / 'e.sock'}"
        cfg: dict[str, dict[str, Any]] = {
            "engine": {"endpoint": self.endpoint},
            "store": {"path": str(self.dir / "data" / "wojak.db")},
            "broker": {"journal": str(self.dir / "data" / "broker.log"), "fill_probability": 0.9, "seed": 11},
            "escalation": {"path": str(self.dir / "data" / "escalations.jsonl")},
        }
        for name, keys in sections.items():
            cfg.setdefault(name, {}).update(keys)
        cfg["engine"]["endpoint"] = self.endpoint
        self.sections = cfg
        self.config = write_config(self.dir / "wojak.toml", cfg)
        self.store_path = Path(cfg["store"]["path"])
        self.journal_path = Path(cfg["broker"]["journal"])
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "engine.log"

    def start(self, timeout: float = 20.0) -> "EngineProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "wojak.cli", "engine", "--config", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with EngineClient(self.endpoint, timeout_s=0.5) as c:
                    if c.call("health").ok:
                        return self
            except EngineUnavailable:
                continue
        raise RuntimeError(f"engine did not answer within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def configure(self, **sections: dict[str, Any]) -> "EngineProcess":
        """Change config keys (merged into their sections); the next `start` uses them."""
        for name, keys in sections.items():
            self.sections.setdefault(name, {}).update(keys)
        write_config(self.config, self.sections)
        return self

    def client(self, timeout_s: float = 5.0) -> EngineClient:
        return EngineClient(self.endpoint, timeout_s=timeout_s)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    @property
    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def store(self) -> SqliteStore:
        """A read connection to the engine's store (WAL: safe while the engine runs)."""
        return SqliteStore(self.store_path)

    def broker_calls(self) -> dict[str, int]:
        """How many times the sandbox broker was sent each id (read from its journal)."""
        return read_call_counts(self.journal_path)


class SidecarProcess:
    """A real `wojak sidecar <source>` process: its settings in the environment, its output in a log file."""

    def __init__(self, source: str, env: dict[str, str], log: Path) -> None:
        self.source = source
        self.env = dict(os.environ, **env)
        self.log = Path(log)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SidecarProcess":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "wojak.cli", "sidecar", self.source], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM, then wait for the drain; the exit code."""
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def nifty_fut(instruments_today=None) -> str:
    """The front-month NIFTY future of the built-in master (changes with the date)."""
    from engine.clock import Clock
    from engine.instruments import monthly_expiries, symbol_for

    today = instruments_today or Clock().local().date()
    return symbol_for("NIFTY", monthly_expiries(today, 1)[0], "FUT", None, False)
