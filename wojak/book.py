"""`wojak book ...`: the order book, trade book, positions, ticks and escalations as the store holds them.

Read-only views for the trader and for scripts: an aligned table by default, one JSON object per
line with `--json`. They read the store named by the config (SQLite or Couchbase) as any reader
does - with a running engine too: a SQLite reader first applies what the batch journal holds
beyond the tables, so it sees every answered order.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any, Iterable, Sequence

import msgspec

from engine.models import reason_code, unrealised_pnl
from engine.store.base import Store


def _time(ns: int, tz: zoneinfo.ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz).isoformat(timespec="milliseconds") if ns else ""


def orders(store: Store, tz: zoneinfo.ZoneInfo, account: str | None, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` decisions (of one account), oldest first."""
    return [{"time": _time(d.ts, tz), "client_order_id": d.client_order_id, "account": d.account,
             "symbol": d.symbol, "side": d.side, "quantity": d.quantity, "status": d.status,
             "filled_qty": d.filled_qty, "fill_price": d.fill_price, "trade_id": d.trade_id,
             "reasons": [reason_code(r) for r in d.reasons], "escalation_id": d.escalation_id}
            for d in store.decisions(account, limit)]


def trades(store: Store, tz: zoneinfo.ZoneInfo, client_order_id: str | None) -> list[dict[str, Any]]:
    """Every trade, or one order's (a sliced order's include its slices')."""
    return [{"time": _time(t.ts, tz), "trade_id": t.trade_id, "client_order_id": t.client_order_id,
             "account": t.account, "symbol": t.symbol, "side": t.side, "quantity": t.quantity, "price": t.price}
            for t in store.trades(client_order_id)]


def positions(store: Store, account: str | None, open_only: bool) -> list[dict[str, Any]]:
    """Net quantity, average price, realised P&L, and unrealised P&L at the last tick stored."""
    ltp = {symbol: price for symbol, (price, _) in store.last_prices().items()}
    out = []
    for p in sorted(store.positions(account), key=lambda p: (p.account, p.symbol)):
        if open_only and not p.net_qty:
            continue
        last = ltp.get(p.symbol)
        out.append({"account": p.account, "symbol": p.symbol, "net_qty": p.net_qty,
                    "avg_price": round(p.avg_price, 4), "realised_pnl": round(p.realised_pnl, 2), "ltp": last,
                    "unrealised_pnl": unrealised_pnl(last, p.avg_price, p.net_qty)})
    return out


def ticks(store: Store, tz: zoneinfo.ZoneInfo, symbol: str, limit: int) -> list[dict[str, Any]]:
    """A symbol's latest ticks, newest first."""
    return [{"time": _time(t.ts or 0, tz), "symbol": t.symbol, "ltp": t.ltp} for t in store.ticks(symbol, limit)]


def escalations(store: Store, tz: zoneinfo.ZoneInfo, limit: int, undelivered: bool) -> list[dict[str, Any]]:
    """The latest `limit` escalations, oldest first, and where their delivery to the risk-management
    system stands: delivered (when), or waiting (attempts so far and the last error)."""
    out = []
    for s in store.escalations(limit):
        if undelivered and s.delivered_ns is not None:
            continue
        e = s.escalation
        out.append({"time": _time(e.ts, tz), "escalation_id": e.escalation_id, "client_order_id": e.client_order_id,
                    "account": e.account, "reasons": [reason_code(r) for r in e.reasons],
                    "delivered": _time(s.delivered_ns, tz) if s.delivered_ns is not None else None,
                    "attempts": s.attempts, "last_error": s.last_error})
    return out


def render(rows: Sequence[dict[str, Any]], as_json: bool) -> Iterable[str]:
    """JSON lines, or a table whose columns are as wide as their widest cell."""
    if as_json:
        yield from (msgspec.json.encode(r).decode() for r in rows)
        return
    if not rows:
        yield "(none)"
        return
    cells = [[_cell(v) for v in r.values()] for r in rows]
    head = list(rows[0])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    yield "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()
    for c in cells:
        yield "  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip()


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return str(v)
