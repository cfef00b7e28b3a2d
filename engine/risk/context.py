"""One instant of exchange-local time, computed once per batch for every time rule."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from engine.clock import Clock
from engine.config import RiskSection, minutes


@dataclass(frozen=True, slots=True)
class Moment:
    ns: int
    today: dt.date
    minute: int  # minutes since local midnight
    weekend: bool
    holiday: bool  # an exchange holiday ([risk] holidays)
    market_open: bool
    close_minute: int
    past_expiry_cutoff: bool

    @property
    def hhmm(self) -> str:
        return f"{self.minute // 60:02d}:{self.minute % 60:02d}"

    @classmethod
    def at(cls, clock: Clock, risk: RiskSection, ns: int | None = None) -> "Moment":
        ns = clock.now_ns() if ns is None else ns
        local = clock.local(ns)
        minute = local.hour * 60 + local.minute
        today = local.date()
        weekend = local.weekday() >= 5
        holiday = today in risk.holidays
        close = minutes(risk.market_close)
        return cls(
            ns=ns,
            today=today,
            minute=minute,
            weekend=weekend,
            holiday=holiday,
            market_open=not (weekend or holiday) and minutes(risk.market_open) <= minute < close,
            close_minute=close,
            past_expiry_cutoff=minute >= minutes(risk.expiry_day_cutoff),
        )
