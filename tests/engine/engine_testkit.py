"""Shared vocabulary of the engine tests: the simulated trading day, a small instrument master written
for it, order builders, and helpers that ask a real engine (over ZeroMQ) and its store.

The simulated day is a fixed Tuesday in the past (an NSE expiry day). It stays in the past whenever
the suite runs, so nothing depends on today's date and wall-clock retry timers (the outbox) fire.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families

from engine.client import EngineClient
from engine.instruments import COLUMNS
from engine.models import reason_code

REPO = Path(__file__).resolve().parents[2]
SIM_DAY = dt.date(2026, 11, 24)  # a Tuesday: expiry day for contracts that expire "today"
SIM_START = "2026-11-24T14:30:00+05:30"  # after the 14:00 expiry-day cutoff, before the 15:30 close
SIM_SATURDAY = "2026-11-28T11:00:00+05:30"
SIM_START_NS = int(dt.datetime.fromisoformat(SIM_START).timestamp()) * 10**9  # at or before the engine's now

DECIDED = frozenset({"FILLED", "FAILED", "REJECTED", "ESCALATED"})
# [risk] for tests about something else: no limit an order of theirs could reach.
NO_LIMITS = {"max_orders_per_second": 1_000_000, "max_order_lots": 1000, "max_notional": 1e12,
             "max_position_lots": 1_000_000, "max_gross_exposure": 1e15, "daily_loss_limit": 1e12}

# symbol -> (instrument_type, expiry in days from the trading day, strike, lot_size, tick_size, freeze_qty).
# One symbol per scenario where last prices matter: ticks are global, accounts are not.
INSTRUMENTS: dict[str, tuple[str, int, str, int, str, int]] = {
    "FUTA": ("FUT", 35, "", 50, "0.05", 1001),   # largest legal order 1000 = 20 lots
    "ALLF": ("FUT", 35, "", 50, "0.05", 1001),
    "BANDF": ("FUT", 35, "", 50, "0.05", 1001),
    "NORF": ("FUT", 35, "", 50, "0.05", 1001),   # never ticked: no reference price
    "PNLF": ("FUT", 35, "", 50, "0.05", 1001),
    "TICKF": ("FUT", 35, "", 50, "0.05", 1001),
    "LOTF": ("FUT", 35, "", 1, "0.05", 100001),  # lot 1: many lots in a small order
    "GRSF": ("FUT", 35, "", 1000, "0.05", 100001),  # lot 1000: big value in few lots
    "LOSF": ("FUT", 35, "", 100, "0.05", 100001),
    "OLDF": ("FUT", -1, "", 50, "0.05", 1001),   # expired yesterday
    "OPTX": ("CE", 0, "100", 50, "0.05", 1001),  # expires on the trading day
    "OPTY": ("PE", 35, "100", 50, "0.05", 1001),
}


def write_instruments(path: Path, day: dt.date = SIM_DAY) -> Path:
    """The test instrument master, with expiries laid out around `day` (the engine clock's date)."""
    lines = [",".join(COLUMNS)]
    for sym, (itype, days, strike, lot, tick_size, freeze) in INSTRUMENTS.items():
        expiry = day + dt.timedelta(days=days)
        lines.append(f"{sym},IDX,{itype},{expiry.isoformat()},{strike},{lot},{tick_size},{freeze}")
    path.write_text("\n".join(lines) + "\n")
    return path


def order(coid: str, symbol: str = "LOTF", side: str = "BUY", quantity: int = 1, price: float | None = 100.0,
          account: str = "default", **extra: Any) -> dict:
    o: dict[str, Any] = {"client_order_id": coid, "symbol": symbol, "side": side, "quantity": quantity,
                         "account": account}
    if price is not None:
        o["price"] = price
    o.update(extra)
    return o


def market(coid: str, symbol: str, side: str = "BUY", quantity: int = 50, account: str = "default") -> dict:
    return order(coid, symbol, side, quantity, None, account, order_type="MARKET")


def tick(symbol: str, ltp: float, ts: int | None = None) -> dict:
    t: dict[str, Any] = {"kind": "tick", "symbol": symbol, "ltp": ltp}
    if ts is not None:
        t["ts"] = ts
    return t


def submit(client: EngineClient, *orders: Any, kind: str = "submit_order",
           msg_ids: list[str] | None = None) -> list[dict]:
    resp = client.call(kind, list(orders), msg_ids=msg_ids)
    assert resp.ok, resp.error
    assert len(resp.results) == len(orders)
    return resp.results


def one(client: EngineClient, o: Any, kind: str = "submit_order") -> dict:
    return submit(client, o, kind=kind)[0]


def send_ticks(client: EngineClient, *ticks: dict) -> None:
    resp = client.call("tick", list(ticks))
    assert resp.ok, resp.error
    assert [r["status"] for r in resp.results] == ["ACCEPTED"] * len(ticks), resp.results


def codes(decision: dict) -> list[str]:
    return [reason_code(r) for r in decision.get("reasons", [])]


def positions(client: EngineClient, account: str) -> dict[str, dict]:
    resp = client.call("positions", args={"account": account})
    assert resp.ok, resp.error
    return {p["symbol"]: p for p in resp.data}


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def scrape_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The engine's Prometheus exporter, read over HTTP: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def wojak_book(eng: Any, *args: str) -> str:
    """`wojak book ARGS` on a running engine's config, as a person runs it: its output."""
    out = subprocess.run([sys.executable, "-m", "wojak.cli", "book", *args, "--config", str(eng.config)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wojak_book_rows(eng: Any, *args: str) -> list[dict]:
    return [json.loads(line) for line in wojak_book(eng, *args, "--json").splitlines()]
