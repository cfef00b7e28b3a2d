"""The built-in NSE index F&O sample master: lots, freezes, Tuesday expiries, and holidays."""
from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, loads
from engine.instruments import INDICES, load_csv, sample_csv, trading_day_on_or_before


def master(today: dt.date, holidays=()) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(sample_csv(today, holidays=holidays))))


def test_sample_when_generated_then_each_index_has_three_monthly_futures_on_last_tuesdays():
    rows = master(dt.date(2026, 11, 26))
    futs = [r for r in rows if r["instrument_type"] == "FUT"]
    assert sorted({r["expiry"] for r in futs}) == ["2026-12-29", "2027-01-26", "2027-02-23"]
    for und, (lot, freeze, _, _) in INDICES.items():
        mine = [r for r in futs if r["underlying"] == und]
        assert len(mine) == 3 and {(int(r["lot_size"]), int(r["freeze_qty"])) for r in mine} == {(lot, freeze)}
    assert "NIFTY26DECFUT" in load_csv(sample_csv(dt.date(2026, 11, 26)))
    weekly = sorted({r["expiry"] for r in rows if r["underlying"] == "NIFTY" and r["instrument_type"] == "CE"})
    assert weekly == ["2026-12-01", "2026-12-08", "2026-12-15", "2026-12-22", "2026-12-29"]


def test_sample_when_expiry_day_is_a_holiday_then_the_contract_expires_the_trading_day_before():
    # 29 Dec 2026 (the last Tuesday) off, and 28 Dec too: back over the weekend to Friday 25 Dec...
    rows = master(dt.date(2026, 11, 26), holidays=[dt.date(2026, 12, 29), dt.date(2026, 12, 28)])
    futs = sorted({r["expiry"] for r in rows if r["instrument_type"] == "FUT"})
    assert futs == ["2026-12-25", "2027-01-26", "2027-02-23"]
    # ... and a weekly's Tuesday off moves that week's NIFTY expiry (and its symbol) to the Monday.
    rows = master(dt.date(2026, 11, 26), holidays=[dt.date(2026, 12, 8)])
    weekly = {r["expiry"]: r["symbol"] for r in rows if r["underlying"] == "NIFTY" and r["instrument_type"] == "CE"}
    assert "2026-12-07" in weekly and "2026-12-08" not in weekly
    assert weekly["2026-12-07"].startswith("NIFTY26D07")


@settings(max_examples=200)
@given(day=st.dates(dt.date(2025, 1, 1), dt.date(2030, 12, 31)),
       holidays=st.sets(st.dates(dt.date(2025, 1, 1), dt.date(2030, 12, 31)), max_size=40))
def test_trading_day_on_or_before_when_any_calendar_then_latest_trading_day_not_after(day, holidays):
    got = trading_day_on_or_before(day, holidays)
    assert got <= day and got.weekday() < 5 and got not in holidays
    between = (got + dt.timedelta(days=n) for n in range(1, (day - got).days + 1))
    assert all(d.weekday() >= 5 or d in holidays for d in between)


def test_config_holidays_when_toml_dates_then_dates_and_anything_else_named():
    cfg = loads('[risk]\nholidays = [2026-12-25, 2026-10-20]\n')
    assert cfg.risk.holidays == [dt.date(2026, 12, 25), dt.date(2026, 10, 20)]
    for bad in ('["2026-12-25"]', '[2026-12-25T10:00:00]', '"2026-12-25"'):
        with pytest.raises(ConfigError, match=r"\[risk\] holidays"):
            loads(f"[risk]\nholidays = {bad}\n")
