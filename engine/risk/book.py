"""The engine's in-memory view of risk state: positions, last prices, today's P&L, order rate, halt.

The store is the durable copy; the book is rebuilt from it at start. One engine process owns one
book (single writer), so the hot path never reads the store for risk.

Orders that passed the gate but whose broker answer has not been applied yet are *pending*: limits
count them as if filled (an open order is exposure), which keeps a batch as safe as one-at-a-time.

An account's gross exposure and mark-to-market follow every position change exactly (term by
term, O(1) per order) and are revalued at market prices at most `refresh_ns` apart (default
1 s): walking every held symbol for every order would cost more than the rest of the gate. Each
account's revaluations are staggered by a fixed offset of its own (up to half the period), so
accounts that started together do not all fall due in the same batch, every second.
"""
from __future__ import annotations

import zlib
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
    # Per account, for the revaluation loop (small dicts walk fast; one big dict keyed by pairs
    # does not): symbol -> its position (None while the symbol only has orders pending).
    held: dict[str, dict[str, PositionState | None]] = field(default_factory=dict)
    pending: dict[str, dict[str, int]] = field(default_factory=dict)  # account -> symbol -> signed qty
    rate: dict[str, deque] = field(default_factory=dict)
    refresh_ns: int = 1_000_000_000  # [risk] mtm_refresh_ms
    now_ns: int = 0
    _exposure: dict[str, _Exposure] = field(default_factory=dict)
    _terms: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # (gross, mtm) terms
    _pending_px: dict[tuple[str, str], float] = field(default_factory=dict)  # price of a pending order

    def roll_day(self, day: str) -> None:
        if day != self.day:
            self.day = day
            self.day_realised = {}

    def load_position(self, account: str, symbol: str, state: PositionState) -> None:
        """Start-up: a position as the store has it."""
        self.positions[(account, symbol)] = state
        if state.net_qty:
            self.held.setdefault(account, {})[symbol] = state

    def net(self, account: str, symbol: str) -> int:
        """Net quantity including orders pending at the broker."""
        pos = self.positions.get((account, symbol))
        pend = self.pending.get(account)
        return (pos.net_qty if pos else 0) + (pend.get(symbol, 0) if pend else 0)

    # -- exposure: exact for every position change, revalued at market every refresh_ns ----------
    def begin_batch(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def add_pending(self, account: str, symbol: str, signed_qty: int, price: float | None = None) -> None:
        pend = self.pending.get(account)
        if pend is None:
            pend = self.pending[account] = {}
        pend[symbol] = pend.get(symbol, 0) + signed_qty
        held = self.held.get(account)
        if held is None:
            held = self.held[account] = {}
        if symbol not in held:
            held[symbol] = self.positions.get((account, symbol))
        if price is not None:
            self._pending_px[(account, symbol)] = price
        self._recount(account, symbol)

    def end_batch(self) -> None:
        """Orders still pending at the end of a batch (the broker call failed: outcome unknown, to be
        reconciled) stop counting: settled ones have left already (`settle`)."""
        settled, self.pending = self.pending, {}
        self._pending_px.clear()
        for account, symbols in settled.items():
            for symbol in symbols:
                self._recount(account, symbol)

    def gross_exposure(self, account: str) -> float:
        """Sum of |net qty incl. pending| x last price (average price where no tick yet)."""
        return self._view(account).gross

    def mtm(self, account: str) -> float:
        """Mark-to-market of open positions against their average price."""
        return self._view(account).mtm

    def _view(self, account: str) -> _Exposure:
        e = self._exposure.get(account)
        if e is None:
            # First valuation stamped up to half a period early, by an offset fixed per account:
            # accounts that start together then fall due at different times, not all in one batch.
            stamp = self.now_ns - zlib.crc32(account.encode()) % 512 * (self.refresh_ns // 1024)
            e = self._exposure[account] = self._revalue(account, stamp)
        elif self.now_ns - e.stamp > self.refresh_ns:
            e = self._exposure[account] = self._revalue(account, e.stamp + self.refresh_ns)
        return e

    def _revalue(self, account: str, stamp: int) -> _Exposure:
        """Every (account, symbol) term at current prices: one tight loop, run at most every refresh_ns.
        Symbols left flat with nothing pending drop out of `held` on the way."""
        terms: dict[str, tuple[float, float]] = {}
        self._terms[account] = terms
        held_syms = self.held.get(account)
        gross = mtm = 0.0
        if held_syms:
            ltp, pend, pending_px = self.ltp, self.pending.get(account), self._pending_px
            flat = []
            for sym, pos in held_syms.items():
                held = pos.net_qty if pos is not None else 0
                q = held + pend.get(sym, 0) if pend else held
                if not q and not held:
                    flat.append(sym)
                    continue
                px = ltp.get(sym)
                if px is None:  # no tick yet: average price, or the pending order's own price
                    g = abs(q) * (pos.avg_price if held else pending_px.get((account, sym), 0.0))
                    m = 0.0
                else:
                    g = abs(q) * px
                    m = (px - pos.avg_price) * held if held else 0.0
                terms[sym] = (g, m)
                gross += g
                mtm += m
            for sym in flat:
                del held_syms[sym]
        # Never stamped more than a period in the past (an account idle for a while).
        return _Exposure(gross, mtm, max(stamp, self.now_ns - self.refresh_ns))

    def _recount(self, account: str, symbol: str) -> None:
        """Replace one (account, symbol) term in the account's gross exposure and MTM."""
        e = self._exposure.get(account)
        if e is None:
            return  # valued in full on first use
        pos = self.positions.get((account, symbol))
        px = self.ltp.get(symbol)
        held = pos.net_qty if pos is not None else 0
        pend = self.pending.get(account)
        q = held + pend.get(symbol, 0) if pend else held
        gpx = px if px is not None else (pos.avg_price if held else self._pending_px.get((account, symbol), 0.0))
        g = abs(q) * gpx
        m = (px - pos.avg_price) * held if (held and px is not None) else 0.0
        terms = self._terms[account]
        old_g, old_m = terms.get(symbol, (0.0, 0.0))
        e.gross += g - old_g
        e.mtm += m - old_m
        terms[symbol] = (g, m)

    def day_pnl(self, account: str) -> float:
        """Realised today plus mark-to-market of open positions against their average price."""
        return self.day_realised.get(account, 0.0) + self.mtm(account)

    def apply_fill(self, account: str, symbol: str, signed_qty: int, price: float) -> PositionState:
        pos = self._fill(account, symbol, signed_qty, price)
        self._recount(account, symbol)
        return pos

    def settle(self, account: str, symbol: str, pending_qty: int, fills: list[tuple[int, float]]) -> None:
        """An order's outcome: its pending quantity (0 if none) leaves, its fills enter; one recount."""
        if pending_qty:
            pend = self.pending.get(account)
            if pend is not None and symbol in pend:
                left = pend[symbol] - pending_qty
                if left:
                    pend[symbol] = left
                else:
                    del pend[symbol]
        for signed_qty, price in fills:
            self._fill(account, symbol, signed_qty, price)
        if pending_qty or fills:
            self._recount(account, symbol)

    def _fill(self, account: str, symbol: str, signed_qty: int, price: float) -> PositionState:
        key = (account, symbol)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = PositionState()
        pnl = pos.apply_fill(signed_qty, price)
        if pnl:
            self.day_realised[account] = self.day_realised.get(account, 0.0) + pnl
        held = self.held.get(account)
        if held is None:
            held = self.held[account] = {}
        held[symbol] = pos
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
