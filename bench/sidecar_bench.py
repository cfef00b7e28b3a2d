"""End-to-end throughput of a source sidecar through its real server.

The measurement: N orders are published to the source first; then a real engine and the real
`wojak sidecar <source>` process start, and the clock runs from the first decision the engine
records (so the sidecar's start-up is not counted) until the engine's store holds N decisions. That is the sidecar's drain rate: orders/s end to end through the
broker, the sidecar, ZeroMQ, the engine and the store's durable commit.

Each source's benchmark module supplies a `Bench` with `publish(payloads)` and `sidecar_env()`.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wojak.procs import EngineProcess, SidecarProcess, nifty_fut


@dataclass
class Result:
    source: str
    orders: int
    seconds: float
    sidecar_rss_mb: float

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds

    def line(self) -> str:
        return (f"{self.source}: {self.orders} orders in {self.seconds:.2f}s = {self.per_second:,.0f} orders/s "
                f"end to end (sidecar peak RSS {self.sidecar_rss_mb:.0f} MiB)")


def orders(n: int, symbol: str, prefix: str) -> list[bytes]:
    """A plain stream of valid NIFTY futures orders, alternating sides so positions stay in limits."""
    return [json.dumps({"client_order_id": f"{prefix}-{i}", "symbol": symbol, "side": "BUY" if i % 2 else "SELL",
                        "quantity": 65, "price": 26000.0, "account": f"bench{i % 50}"}).encode() for i in range(n)]


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(source: str, publish: Callable[[list[bytes]], None], sidecar_env: dict[str, str], n: int = 5000,
            timeout_s: float = 300.0, workdir: str | None = None) -> Result:
    work = Path(workdir or tempfile.mkdtemp(prefix=f"wojak-bench-{source}-"))
    engine = EngineProcess(work / "engine", risk={"max_orders_per_second": 1_000_000, "max_position_lots": 100_000,
                                                  "max_gross_exposure": 1e15})
    engine.start()
    sidecar = None
    try:
        symbol = nifty_fut()
        with engine.client() as c:
            c.call("tick", [{"symbol": symbol, "ltp": 26000.0}])
        publish(orders(n, symbol, f"{source}-{int(time.time())}"))
        started = time.monotonic()
        sidecar = SidecarProcess(source, {"WOJAK_ENGINE_ENDPOINT": engine.endpoint, **sidecar_env},
                                 work / "sidecar.log").start()
        store = engine.store()
        rss = 0.0
        first_at, first_done = 0.0, 0
        while True:
            done = store.counts()["orders"]
            rss = max(rss, _peak_rss_mb(sidecar.pid))
            if done and not first_at:
                first_at, first_done = time.monotonic(), done
            if done >= n:
                break
            if not sidecar.alive or time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{source} bench stalled at {done}/{n}: {sidecar.tail(2000)}")
            time.sleep(0.01)
        elapsed = time.monotonic() - first_at
        store.close()
        return Result(source, n - first_done, elapsed, rss)
    finally:
        if sidecar is not None and sidecar.alive:
            sidecar.terminate(30)
        engine.stop()
