"""`wojak local --demo`: a short, realistic session through the real HTTP API, then a summary.

Prices arrive for index futures and at-the-money options of the built-in sample master; three
traders place orders that fill, a few that break exchange rules (lot size, tick size, an unknown
contract), a few the gate escalates (a limit far outside the price band, a quantity above the
exchange freeze limit), a resend (answered as a duplicate, never sent twice), a malformed body
(400, recorded as REJECTED/SCHEMA), and a burst above the per-account order rate (SEBI throttle).
Everything goes over HTTP to the sidecar, so the demo exercises exactly what a client would.
"""
from __future__ import annotations

import http.client
import json
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

LEVELS = {"NIFTY": 26000.0, "BANKNIFTY": 59000.0}


@dataclass
class Row:
    client_order_id: str
    account: str
    symbol: str
    side: str
    quantity: Any
    order_type: str
    http_status: int
    answer: dict


class Api:
    """A keep-alive JSON client over the standard library (the demo needs nothing installed)."""

    def __init__(self, base: str, token: str = "", tls: bool = False) -> None:
        u = urlsplit(base)
        if tls:  # our own child on loopback: the demo checks the API, not the certificate chain
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(u.hostname, u.port, timeout=30,
                                                                                 context=ctx)
        else:
            self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.token = token

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, dict]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        for attempt in range(10):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                if attempt == 9:
                    raise
                time.sleep(0.2)
                continue
            if resp.status == 503:  # nothing decided: safe to resend the same order
                time.sleep(float(resp.getheader("retry-after", "1")))
                continue
            return resp.status, json.loads(payload) if payload else {}
        return 503, {"error": "ENGINE_UNAVAILABLE"}

    def close(self) -> None:
        self.conn.close()


def contracts(today=None, holidays=()) -> dict[str, str]:
    """Front-month futures and the at-the-money NIFTY options of the built-in sample master (as the
    engine generates it: with the same holidays)."""
    from engine.clock import Clock
    from engine.instruments import load

    day = today or Clock().local().date()
    inst = load("builtin", day, holidays)
    out: dict[str, str] = {}
    for name in ("NIFTY", "BANKNIFTY"):
        futs = sorted((i for i in inst.values() if i.underlying == name and i.instrument_type == "FUT"),
                      key=lambda i: i.expiry)
        out[name] = futs[0].symbol
    for kind in ("CE", "PE"):
        opts = sorted((i for i in inst.values() if i.underlying == "NIFTY" and i.instrument_type == kind
                       and i.strike == LEVELS["NIFTY"]), key=lambda i: i.expiry)
        out[f"NIFTY_{kind}"] = opts[0].symbol
    return out


def stream(run: str, s: dict[str, str]) -> list[tuple[str, Any]]:
    """The session as ("tick", {...}) / ("order", {...}) / ("raw", bytes) steps."""
    nf, bf, ce, pe = s["NIFTY"], s["BANKNIFTY"], s["NIFTY_CE"], s["NIFTY_PE"]
    n = iter(range(1, 1000))

    def order(account: str, symbol: str, side: str, qty: int, price: float | None = None) -> tuple[str, dict]:
        o = {"client_order_id": f"demo-{run}-{next(n):02d}", "symbol": symbol, "side": side, "quantity": qty,
             "account": account, "strategy": "demo"}
        if price is None:
            o["order_type"] = "MARKET"
        else:
            o["price"] = price
        return "order", o

    first = order("alpha", nf, "BUY", 65, 26000.0)
    steps: list[tuple[str, Any]] = [
        ("tick", [{"symbol": nf, "ltp": 26000.0}, {"symbol": bf, "ltp": 59000.0},
                  {"symbol": ce, "ltp": 182.5}, {"symbol": pe, "ltp": 176.0}]),
        first,                                        # fills
        order("alpha", nf, "BUY", 130),               # MARKET: fills at the last price
        order("beta", bf, "SELL", 30, 59000.0),       # a short future
        order("beta", ce, "BUY", 130, 182.5),         # two lots of the ATM call
        order("gamma", pe, "SELL", 65, 176.0),        # writes a put
        order("gamma", nf, "BUY", 100, 26000.0),      # REJECTED: 100 is not a multiple of the lot (65)
        order("gamma", ce, "BUY", 65, 182.53),        # REJECTED: not a multiple of the 0.05 tick
        order("alpha", "NIFTY99JANFUT", "BUY", 65, 26000.0),  # REJECTED: no such contract
        order("beta", nf, "BUY", 65, 29000.0),        # ESCALATED: 11.5% above the last price
        order("beta", nf, "BUY", 1820, 26000.0),      # ESCALATED: above NIFTY's freeze quantity (1,800)
        ("tick", [{"symbol": nf, "ltp": 26150.0}, {"symbol": ce, "ltp": 241.0}]),
        order("alpha", nf, "SELL", 65, 26150.0),      # books a profit
        first,                                        # the client resends: a duplicate, not a 2nd trade
        ("raw", json.dumps({"client_order_id": f"demo-{run}-bad", "symbol": nf, "side": "BUY",
                            "quantity": "two lots"}).encode()),
    ]
    # A strategy loop gone wild: 14 orders at once from one account, above 10 orders/s.
    steps += [order("delta", nf, "BUY" if i % 2 == 0 else "SELL", 65, 26150.0) for i in range(14)]
    steps.append(("tick", [{"symbol": nf, "ltp": 26090.0}, {"symbol": bf, "ltp": 58875.0}]))
    return steps


def _status(row: Row) -> str:
    if "status" in row.answer:
        return row.answer["status"]
    # 400: the engine recorded the body as REJECTED/SCHEMA before the sidecar answered
    return "REJECTED" if row.http_status == 400 else f"HTTP {row.http_status}"


def detail(row: Row) -> str:
    a = row.answer
    if row.http_status == 400:
        return f"HTTP 400 {a.get('error')} field={a.get('field')}"
    if a.get("duplicate"):
        return f"duplicate of the first answer (fill {a.get('fill_price')})"
    if a.get("reasons"):
        return a["reasons"][0]
    if a.get("fill_price") is not None:
        return f"filled {a.get('filled_qty')} @ {a['fill_price']:.2f}"
    return ""


def run(base: str, token: str = "", tls: bool = False, pace_s: float = 0.05, holidays=()) -> Counter:
    """Play the session against a running HTTP sidecar and print the summary; returns status counts."""
    api = Api(base, token, tls)
    run_id = f"{int(time.time()):x}"  # the store keeps every past run: ids must not repeat
    rows: list[Row] = []
    ticks = 0
    print("\nDemo: ticks and orders on the sample NSE instruments, through the HTTP API\n", flush=True)
    try:
        steps = stream(run_id, contracts(holidays=holidays))
        for kind, body in steps:
            if kind == "tick":
                status, answer = api.call("POST", "/v1/ticks", body)
                ticks += answer.get("accepted", 0)
                continue
            if kind == "raw":
                status, answer = api.call("POST", "/v1/orders", raw=body)
                o = json.loads(body)
            else:
                status, answer = api.call("POST", "/v1/orders", body)
                o = body
            rows.append(Row(o["client_order_id"], o.get("account", "default"), o["symbol"], o["side"],
                            o["quantity"], o.get("order_type", "LIMIT"), status, answer))
            if o.get("account") != "delta":
                time.sleep(pace_s)  # a person's pace; the burst account goes as fast as it can
        _, positions = api.call("GET", "/v1/positions")
    finally:
        api.close()
    counts = Counter(_status(r) for r in rows if not r.answer.get("duplicate"))  # decisions, not answers
    _print(rows, positions.get("positions", []), counts, ticks)
    return counts


def _print(rows: list[Row], positions: list[dict], counts: Counter, ticks: int) -> None:
    head = f"{'client_order_id':<20} {'account':<7} {'symbol':<24} {'side':<4} {'qty':>5} {'type':<6} {'status':<10} detail"
    print(head)
    print("-" * len(head))
    for r in rows:
        status = _status(r)
        print(f"{r.client_order_id:<20} {r.account:<7} {r.symbol:<24} {r.side:<4} {str(r.quantity):>5} "
              f"{r.order_type:<6} {status:<10} {detail(r)}")
    print("\nSummary of decisions")
    for status in ("FILLED", "FAILED", "REJECTED", "ESCALATED"):
        print(f"  {status:<10} {counts.get(status, 0):>3}")
    dups = sum(1 for r in rows if r.answer.get("duplicate"))
    print(f"  {'orders':<10} {len(rows):>3}   ({dups} resend answered as duplicate; {ticks} ticks accepted)")
    print("\nPositions")
    print(f"  {'account':<7} {'symbol':<24} {'net_qty':>7} {'avg_price':>10} {'ltp':>10} {'realised':>10} {'unrealised':>10}")
    for p in positions:
        ltp = f"{p['ltp']:.2f}" if p.get("ltp") is not None else "-"
        print(f"  {p['account']:<7} {p['symbol']:<24} {p['net_qty']:>7} {p['avg_price']:>10.2f} {ltp:>10} "
              f"{p['realised_pnl'] + 0.0:>10.2f} {p['unrealised_pnl'] + 0.0:>10.2f}")  # no "-0.00"
    print(flush=True)
