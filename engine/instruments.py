"""The instrument master: what can be traded, in which lot, tick and freeze quantity, until when.

Loaded from a CSV (`symbol,underlying,instrument_type,expiry,strike,lot_size,tick_size,freeze_qty`),
or generated for a given date from NSE's rules for index derivatives (`builtin`), so the sample master
never goes stale. Prices are held in paise (integers) so tick checks are exact.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ["symbol", "underlying", "instrument_type", "expiry", "strike", "lot_size", "tick_size", "freeze_qty"]
TYPES = frozenset({"FUT", "CE", "PE"})


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    underlying: str
    instrument_type: str  # FUT | CE | PE
    expiry: dt.date
    strike: float | None
    lot_size: int
    tick_paise: int
    freeze_qty: int  # an order of this many units or more is frozen by the exchange

    @property
    def is_option(self) -> bool:
        return self.instrument_type != "FUT"

    @property
    def max_order_qty(self) -> int:
        """The largest exchange-legal order: the largest whole-lot multiple under the freeze quantity."""
        return ((self.freeze_qty - 1) // self.lot_size) * self.lot_size


class InstrumentError(ValueError):
    pass


def load_csv(text: str, source: str = "<csv>") -> dict[str, Instrument]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != COLUMNS:
        raise InstrumentError(f"{source}: header must be {','.join(COLUMNS)}")
    out: dict[str, Instrument] = {}
    for lineno, row in enumerate(reader, start=2):
        try:
            inst = _parse_row(row)
        except (KeyError, ValueError) as e:
            raise InstrumentError(f"{source}:{lineno}: {e}") from None
        if inst.symbol in out:
            raise InstrumentError(f"{source}:{lineno}: duplicate symbol {inst.symbol}")
        out[inst.symbol] = inst
    if not out:
        raise InstrumentError(f"{source}: no instruments")
    return out


def _parse_row(row: dict[str, str]) -> Instrument:
    itype = row["instrument_type"].strip().upper()
    if itype not in TYPES:
        raise ValueError(f"instrument_type must be one of FUT, CE, PE, not {itype!r}")
    lot = int(row["lot_size"])
    freeze = int(row["freeze_qty"])
    tick_paise = round(float(row["tick_size"]) * 100)
    if lot <= 0 or freeze <= lot or tick_paise <= 0:
        raise ValueError("lot_size, tick_size must be positive and freeze_qty above one lot")
    strike = row["strike"].strip()
    if itype != "FUT" and not strike:
        raise ValueError("options need a strike")
    return Instrument(
        symbol=row["symbol"].strip(),
        underlying=row["underlying"].strip(),
        instrument_type=itype,
        expiry=dt.date.fromisoformat(row["expiry"].strip()),
        strike=float(strike) if strike else None,
        lot_size=lot,
        tick_paise=tick_paise,
        freeze_qty=freeze,
    )


def load(path: str, today: dt.date, holidays: Collection[dt.date] = ()) -> dict[str, Instrument]:
    """The master at `path`, or "builtin": the sample master for `today` (expiries off `holidays`)."""
    if path == "builtin":
        return load_csv(sample_csv(today, holidays=holidays), source="builtin")
    p = Path(path)
    try:
        return load_csv(p.read_text(), source=str(p))
    except OSError as e:
        raise InstrumentError(f"{p}: cannot read instrument master: {e.strerror}") from None


# NSE index derivatives (lot sizes from 30 Dec 2025, freeze quantities Feb 2026), with a reference
# level and strike step to lay out a realistic option chain around.
INDICES = {
    #             lot, freeze, level,  strike step
    "NIFTY": (65, 1800, 26000, 50),
    "BANKNIFTY": (30, 600, 59000, 100),
    "FINNIFTY": (60, 1800, 27500, 50),
    "MIDCPNIFTY": (120, 2800, 13500, 25),
    "NIFTYNXT50": (25, 600, 70000, 100),
}
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def last_tuesday(year: int, month: int) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    d = nxt - dt.timedelta(days=1)
    return d - dt.timedelta(days=(d.weekday() - 1) % 7)


def trading_day_on_or_before(day: dt.date, holidays: Collection[dt.date]) -> dt.date:
    """An expiry that falls on a holiday (or a weekend) moves to the trading day before it."""
    while day.weekday() >= 5 or day in holidays:
        day -= dt.timedelta(days=1)
    return day


def monthly_expiries(today: dt.date, count: int, holidays: Collection[dt.date] = ()) -> list[dt.date]:
    out, y, m = [], today.year, today.month
    while len(out) < count:
        e = trading_day_on_or_before(last_tuesday(y, m), holidays)
        if e >= today:
            out.append(e)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def weekly_expiries(today: dt.date, count: int, holidays: Collection[dt.date] = ()) -> list[dt.date]:
    first = today + dt.timedelta(days=(1 - today.weekday()) % 7)  # next Tuesday, or today
    tuesdays = (first + dt.timedelta(weeks=i) for i in range(count + 1))
    return [e for e in (trading_day_on_or_before(t, holidays) for t in tuesdays) if e >= today][:count]


def symbol_for(underlying: str, expiry: dt.date, itype: str, strike: int | None, weekly: bool) -> str:
    """NSE-style trading symbols: NIFTY26DECFUT, NIFTY26DEC26000CE (monthly), NIFTY26D0126000CE (weekly)."""
    yy = f"{expiry.year % 100:02d}"
    if itype == "FUT":
        return f"{underlying}{yy}{MONTHS[expiry.month - 1]}FUT"
    if weekly:
        code = "OND"[expiry.month - 10] if expiry.month >= 10 else str(expiry.month)
        return f"{underlying}{yy}{code}{expiry.day:02d}{strike}{itype}"
    return f"{underlying}{yy}{MONTHS[expiry.month - 1]}{strike}{itype}"


def sample_csv(today: dt.date, strikes_each_side: int = 4, holidays: Collection[dt.date] = ()) -> str:
    """Futures (3 months) and options (nearest monthly; NIFTY also weeklies) for the five indices.

    Expiry is the last Tuesday of the month (Tuesday since 1 Sep 2025); NIFTY is the only weekly
    index expiry. An expiry on an exchange holiday moves to the trading day before; the holidays
    come from the config (`[risk] holidays`), none are built in. A production master comes from the
    exchange's contract file, loaded as CSV.
    """
    rows: list[list[str]] = []
    months = monthly_expiries(today, 3, holidays)
    weeklies = [w for w in weekly_expiries(today, 4, holidays) if w not in months]
    for und, (lot, freeze, level, step) in INDICES.items():
        for exp in months:
            rows.append([symbol_for(und, exp, "FUT", None, False), und, "FUT", exp.isoformat(), "",
                         str(lot), "0.05", str(freeze)])
        chains = [(months[0], False)] + ([(w, True) for w in weeklies] if und == "NIFTY" else [])
        for exp, weekly in chains:
            for k in range(-strikes_each_side, strikes_each_side + 1):
                strike = level + k * step
                for itype in ("CE", "PE"):
                    rows.append([symbol_for(und, exp, itype, strike, weekly), und, itype, exp.isoformat(),
                                 str(strike), str(lot), "0.05", str(freeze)])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(sorted(rows, key=lambda r: (r[1], r[3], r[2] != "FUT", r[0])))
    return buf.getvalue()
