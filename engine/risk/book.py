"""The engine's in-memory view of risk state: positions, last prices, today's P&L, order rate, halt.

The store is the durable copy; the book is rebuilt from it at start. One engine process owns one
book (single writer), so the hot path never reads the store for risk.

Orders that passed the gate but whose broker answer has not been applied yet are *pending*: limits
count them as if filled (an open order is exposure), which keeps a batch as safe as one-at-a-time.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class PositionState:
    net_qty: int = 0
    avg_price: float = 0.0
    realised_pnl: float = 0.0

    def apply_fill(self, signed_qty: int, price: float) -> float:
        """Net a fill into the position; returns the P&L it realised."""
        net = self.net_qty
        if net == 0 or (net > 0) == (signed_qty > 0):
            new = net + signed_qty
            self.avg_price = (self.avg_price * abs(net) + price * abs(signed_qty)) / abs(new)
            self.net_qty = new
            return 0.0
        closed = min(abs(signed_qty), abs(net))
        pnl = (price - self.avg_price) * closed * (1 if net > 0 else -1)
        self.realised_pnl += pnl
        new = net + signed_qty
        if new == 0:
            self.avg_price = 0.0
        elif (new > 0) != (net > 0):  # flipped: the remainder opens at the fill price
            self.avg_price = price
        self.net_qty = new
        return pnl


@dataclass
class Book:
    positions: dict[tuple[str, str], PositionState] = field(default_factory=dict)
    ltp: dict[str, float] = field(default_factory=dict)
    day: str = ""  # trading day (exchange-local ISO date) that day_realised belongs to
    day_realised: dict[str, float] = field(default_factory=dict)
    halted: bool = False
    halt_reason: str = ""
    held: dict[str, set[str]] = field(default_factory=dict)  # account -> symbols with a position
    pending: dict[tuple[str, str], int] = field(default_factory=dict)
    rate: dict[str, deque] = field(default_factory=dict)

    def roll_day(self, day: str) -> None:
        if day != self.day:
            self.day = day
            self.day_realised = {}

    def net(self, account: str, symbol: str) -> int:
        """Net quantity including orders pending at the broker."""
        key = (account, symbol)
        pos = self.positions.get(key)
        return (pos.net_qty if pos else 0) + self.pending.get(key, 0)

    def add_pending(self, account: str, symbol: str, signed_qty: int) -> None:
        key = (account, symbol)
        self.pending[key] = self.pending.get(key, 0) + signed_qty
        self.held.setdefault(account, set()).add(symbol)

    def clear_pending(self) -> None:
        self.pending.clear()

    def gross_exposure(self, account: str) -> float:
        total = 0.0
        for sym in self.held.get(account, ()):
            px = self.ltp.get(sym)
            if px is None:
                pos = self.positions.get((account, sym))
                px = pos.avg_price if pos else 0.0
            total += abs(self.net(account, sym)) * px
        return total

    def mtm(self, account: str) -> float:
        total = 0.0
        for sym in self.held.get(account, ()):
            pos = self.positions.get((account, sym))
            px = self.ltp.get(sym)
            if pos and pos.net_qty and px is not None:
                total += (px - pos.avg_price) * pos.net_qty
        return total

    def day_pnl(self, account: str) -> float:
        """Realised today plus mark-to-market of open positions against their average price."""
        return self.day_realised.get(account, 0.0) + self.mtm(account)

    def apply_fill(self, account: str, symbol: str, signed_qty: int, price: float) -> PositionState:
        key = (account, symbol)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = PositionState()
        pnl = pos.apply_fill(signed_qty, price)
        if pnl:
            self.day_realised[account] = self.day_realised.get(account, 0.0) + pnl
        self.held.setdefault(account, set()).add(symbol)
        return pos

    def take_rate_slot(self, account: str, now_ns: int, limit: int) -> bool:
        """Sliding one-second window per account: True and counted if under the limit."""
        q = self.rate.get(account)
        if q is None:
            q = self.rate[account] = deque()
        horizon = now_ns - 1_000_000_000
        while q and q[0] <= horizon:
            q.popleft()
        if len(q) >= limit:
            return False
        q.append(now_ns)
        return True
