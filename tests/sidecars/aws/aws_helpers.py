"""Helpers for the AWS sidecar tests: the real sidecar process, waiting, reading the engine's record."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[3]


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


class SidecarProc:
    """`python -m wojak.cli sidecar <source>` with its settings in the environment."""

    def __init__(self, source: str, env: dict[str, str], engine_endpoint: str, log: Path) -> None:
        self.log = log
        full = dict(os.environ, WOJAK_ENGINE_ENDPOINT=engine_endpoint, **env)
        full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
        with open(log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "wojak.cli", "sidecar", source], env=full,
                                         stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 40.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def decided(engine) -> int:
    store = engine.store()
    try:
        return store.counts()["orders"]
    finally:
        store.close()


def decisions(engine) -> dict[str, Any]:
    store = engine.store()
    try:
        return {d.client_order_id: d for d in store.decisions(limit=1_000_000)}
    finally:
        store.close()


def order(coid: str, symbol: str, side: str = "BUY", account: str = "acct", lots: int = 1,
          order_type: str = "LIMIT", price: float | None = 26000.0) -> bytes:
    o: dict[str, Any] = {"client_order_id": coid, "symbol": symbol, "side": side, "quantity": 65 * lots,
                         "order_type": order_type, "account": account}
    if price is not None and order_type == "LIMIT":
        o["price"] = price
    return json.dumps(o).encode()


def stream(n: int, symbol: str, prefix: str) -> list[bytes]:
    """n valid orders over 20 accounts, each account alternating BUY/SELL (positions stay small)."""
    return [order(f"{prefix}-{i}", symbol, "BUY" if (i // 20) % 2 == 0 else "SELL", f"a{i % 20}") for i in range(n)]


class InProcess:
    """A Source driven by the runtime's Runner on a thread, linked to a real engine (for tests that
    look inside the adapter: what it received, what it checkpointed)."""

    def __init__(self, source, engine_endpoint: str) -> None:
        import threading

        from sidecars.link import EngineLink
        from sidecars.runtime import Runner

        self.source = source
        self.link = EngineLink(engine_endpoint)
        self.runner = Runner(source, self.link)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)

    def __enter__(self) -> "InProcess":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.runner.stop()
        self.thread.join(40)
        self.link.close()


def received_ids(source) -> list[str]:
    """Wrap source.receive to record every msg_id it hands out (in order)."""
    seen: list[str] = []
    inner = source.receive

    def receive(max_messages: int, timeout_s: float):
        msgs = inner(max_messages, timeout_s)
        seen.extend(m.msg_id for m in msgs)
        return msgs

    source.receive = receive
    return seen
