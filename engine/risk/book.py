"""The engine's in-memory view of risk state: positions, last prices, today's P&L, order rate, halt.

The store is the durable copy; the book is rebuilt from it at start. One engine process owns one
book (single writer), so the hot path never reads the store for risk.

Orders that passed the gate but whose broker answer has not been applied yet are *pending*: limits
count them as if filled (an open order is exposure), which keeps a batch as safe as one-at-a-time.

An account's gross exposure and mark-to-market follow every position change exactly (term by
term, O(1) per order) and are revalued at market prices at most `refresh_ns` apart (default
1 s): walking every held symbol for every order would cost more than the rest of the gate.
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


@dataclass(slots=True)
class _Exposure:
    gross: float = 0.0
    mtm: float = 0.0
    stamp: int = 0  # ns of the last full revaluation


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
    refresh_ns: int = 1_000_000_000  # [risk] mtm_refresh_ms
    now_ns: int = 0
    _exposure: dict[str, _Exposure] = field(default_factory=dict)
    _gterm: dict[tuple[str, str], float] = field(default_factory=dict)
    _mterm: dict[tuple[str, str], float] = field(default_factory=dict)
    _pending_px: dict[tuple[str, str], float] = field(default_factory=dict)  # price of a pending order

    def roll_day(self, day: str) -> None:
        if day != self.day:
            self.day = day
            self.day_realised = {}

    def net(self, account: str, symbol: str) -> int:
        """Net quantity including orders pending at the broker."""
        key = (account, symbol)
        pos = self.positions.get(key)
        return (pos.net_qty if pos else 0) + self.pending.get(key, 0)

    # -- exposure: exact for every position change, revalued at market every refresh_ns ----------
    def begin_batch(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def add_pending(self, account: str, symbol: str, signed_qty: int, price: float | None = None) -> None:
        key = (account, symbol)
        self.pending[key] = self.pending.get(key, 0) + signed_qty
        self.held.setdefault(account, set()).add(symbol)
        self._recount(account, symbol, price)

    def end_batch(self) -> None:
        """The batch's pending orders are settled (filled into positions, or failed): count them so."""
        keys = list(self.pending)
        self.pending.clear()
        self._pending_px.clear()
        for account, symbol in keys:
            self._recount(account, symbol)

    def gross_exposure(self, account: str) -> float:
        """Sum of |net qty incl. pending| x last price (average price where no tick yet)."""
        return self._view(account).gross

    def mtm(self, account: str) -> float:
        """Mark-to-market of open positions against their average price."""
        return self._view(account).mtm

    def _view(self, account: str) -> _Exposure:
        e = self._exposure.get(account)
        if e is None or self.now_ns - e.stamp > self.refresh_ns:
            e = self._exposure[account] = self._revalue(account)
        return e

    def _revalue(self, account: str) -> _Exposure:
        """Every (account, symbol) term at current prices: one tight loop, run at most every refresh_ns."""
        e = _Exposure(stamp=self.now_ns)
        positions, pending, ltp = self.positions, self.pending, self.ltp
        gterm, mterm = self._gterm, self._mterm
        for sym in self.held.get(account, ()):
            key = (account, sym)
            pos = positions.get(key)
            held = pos.net_qty if pos else 0
            px = ltp.get(sym)
            if px is None:  # no tick yet: average price, or the pending order's own price
                g = abs(held + pending.get(key, 0)) * (pos.avg_price if held else self._pending_px.get(key, 0.0))
                m = 0.0
            else:
                g = abs(held + pending.get(key, 0)) * px
                m = (px - pos.avg_price) * held if held else 0.0
            gterm[key] = g
            mterm[key] = m
            e.gross += g
            e.mtm += m
        return e

    def _recount(self, account: str, symbol: str, price: float | None = None) -> None:
        """Replace one (account, symbol) term in the account's gross exposure and MTM."""
        e = self._exposure.get(account)
        if e is None:
            return  # valued in full on first use
        key = (account, symbol)
        pos = self.positions.get(key)
        px = self.ltp.get(symbol)
        held = pos.net_qty if pos else 0
        if price is not None:
            self._pending_px[key] = price
        gpx = px if px is not None else (pos.avg_price if held else self._pending_px.get(key, 0.0))
        g = abs(held + self.pending.get(key, 0)) * gpx
        m = (px - pos.avg_price) * held if (held and px is not None) else 0.0
        e.gross += g - self._gterm.get(key, 0.0)
        e.mtm += m - self._mterm.get(key, 0.0)
        self._gterm[key] = g
        self._mterm[key] = m

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
        self._recount(account, symbol)
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
