"""`wojak local` end to end, as a person runs it: start, place an order over HTTP, Ctrl-C, exit 0."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.engine_proc import nifty_fut
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


class Local:
    """`python -m wojak.cli local` in `cwd`, its stdout collected line by line."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.port = free_port()
        # Only the listen address is set: everything else is the built-in default (SQLite in ./wojak-data,
        # the sandbox broker, the sample instrument master).
        (cwd / "wojak.toml").write_text(f'[http]\nlisten = "127.0.0.1:{self.port}"\n')
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("WOJAK_ADMIN_TOKEN", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "wojak.cli", "local", "--config", "wojak.toml", *args],
                                     cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{text!r} not printed (exit {self.proc.poll()}):\n{self.output}")
            time.sleep(0.05)

    def interrupt(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait()


def test_local_when_started_then_an_order_placed_over_http_is_decided_and_ctrl_c_exits_0(tmp_path):
    local = Local(tmp_path)
    try:
        local.wait_for("Ctrl-C to stop.")
        assert f"HTTP API   {local.base}" in local.output
        assert "curl -s " + local.base + "/v1/orders" in local.output
        children = psutil.Process(local.proc.pid).children()
        assert len(children) == 2
        order = {"client_order_id": "readme-1", "symbol": nifty_fut(), "side": "BUY", "quantity": 65,
                 "price": 26000}
        r = httpx.post(f"{local.base}/v1/orders", json=order, timeout=10)
        assert r.status_code == 200 and r.json()["status"] in ("FILLED", "FAILED")
        assert httpx.get(f"{local.base}/v1/orders/readme-1").json()["status"] == r.json()["status"]
        assert local.interrupt() == 0
        assert "stopped cleanly" in local.output
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
        assert (tmp_path / "wojak-data" / "wojak.db").exists()  # the embedded store, in the default place
    finally:
        local.kill()


def test_local_when_demo_then_prints_a_summary_of_decisions_and_keeps_serving(tmp_path):
    local = Local(tmp_path, "--demo")
    try:
        local.wait_for("Wojak keeps running", timeout=90)
        out = local.output
        assert "Summary of decisions" in out and "Positions" in out
        for expected in ("QTY_NOT_LOT_MULTIPLE", "PRICE_NOT_TICK_MULTIPLE", "UNKNOWN_SYMBOL", "PRICE_BAND",
                         "QTY_ABOVE_FREEZE", "ORDER_RATE", "duplicate", "HTTP 400 SCHEMA field=quantity"):
            assert expected in out, expected
        filled = int(out.split("Summary of decisions")[1].split("FILLED")[1].split()[0])
        assert filled >= 8
        assert httpx.get(f"{local.base}/healthz").status_code == 200
        assert local.interrupt() == 0
    finally:
        local.kill()


def test_local_when_engine_dies_then_says_so_stops_the_sidecar_and_exits_1(tmp_path):
    local = Local(tmp_path)
    try:
        local.wait_for("Ctrl-C to stop.")
        engine, sidecar = psutil.Process(local.proc.pid).children()
        assert "engine" in engine.cmdline()
        engine.kill()
        assert local.proc.wait(60) == 1
        assert "engine exited with code -9" in local.output
        assert not sidecar.is_running() or sidecar.status() == psutil.STATUS_ZOMBIE
    finally:
        local.kill()


def test_local_when_port_taken_then_sidecar_failure_reported_and_exit_1(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        (tmp_path / "wojak.toml").write_text(f'[http]\nlisten = "127.0.0.1:{s.getsockname()[1]}"\n')
        env = dict(os.environ, PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, "-m", "wojak.cli", "local", "--config", "wojak.toml"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1
    assert "http sidecar exited with code" in done.stderr and "address already in use" in done.stderr
