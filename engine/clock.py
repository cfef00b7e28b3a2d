"""The engine's clock: the system clock, or one started at a given time running at real speed.

Time rules (market hours, expiry-day cutoff, the daily P&L boundary) read exchange-local wall time
from here, once per batch, so a batch is judged at one instant.
"""
from __future__ import annotations

import datetime as dt
import time
import zoneinfo


class Clock:
    def __init__(self, timezone: str = "Asia/Kolkata", simulated_start: str = "") -> None:
        self.tz = zoneinfo.ZoneInfo(timezone)
        self._offset_ns = 0
        if simulated_start:
            start = dt.datetime.fromisoformat(simulated_start)
            self._offset_ns = int(start.timestamp() * 1e9) - time.time_ns()

    def now_ns(self) -> int:
        return time.time_ns() + self._offset_ns

    def local(self, ns: int | None = None) -> dt.datetime:
        return dt.datetime.fromtimestamp((self.now_ns() if ns is None else ns) / 1e9, self.tz)
