"""The instrument master is loaded again while the engine runs: at the start of each trading day and on
SIGHUP (the exchange lists new contracts every week and new strikes intraday). A master that cannot be
loaded leaves the one in use in place. Real engine processes, over ZeroMQ."""
from __future__ import annotations

import datetime as dt
import os
import signal

from engine_testkit import NO_LIMITS, SIM_DAY, codes, one, order, wait_until

NEW = "NEWF"


def _instrument_count(eng) -> int:
    with eng.client() as c:
        return c.call("health").data["instruments"]


def _list(csv_path, day: dt.date = SIM_DAY) -> None:
    """The exchange's new file: one more contract."""
    expiry = (day + dt.timedelta(days=35)).isoformat()
    with open(csv_path, "a") as f:
        f.write(f"{NEW},IDX,FUT,{expiry},,1,0.05,100001\n")


def test_master_when_sighup_then_new_contracts_tradable_and_a_bad_file_keeps_the_old_master(start_engine):
    eng = start_engine("reload-sighup", risk=NO_LIMITS)
    csv_path = eng.sections["instruments"]["path"]
    before = _instrument_count(eng)
    with eng.client() as c:
        assert codes(one(c, order("rl-1", symbol=NEW))) == ["UNKNOWN_SYMBOL"]
    _list(csv_path)
    os.kill(eng.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: _instrument_count(eng) == before + 1, timeout=10)
    with eng.client() as c:
        assert one(c, order("rl-2", symbol=NEW))["status"] == "FILLED"

    good = open(csv_path).read()
    with open(csv_path, "w") as f:
        f.write("not,a,master\n")
    os.kill(eng.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "instrument master not reloaded (SIGHUP)" in eng.log.read_text(), timeout=10)
    assert _instrument_count(eng) == before + 1  # the master in use stays
    with eng.client() as c:
        assert one(c, order("rl-3", symbol=NEW))["status"] == "FILLED"
    with open(csv_path, "w") as f:
        f.write(good)
    assert eng.alive


def test_master_when_a_new_trading_day_starts_then_loaded_again_without_being_asked(start_engine):
    # Five seconds before midnight in Mumbai (the engine takes one or two to start): the first
    # request after midnight rolls the day.
    eng = start_engine("reload-day", engine={"simulated_start": f"{SIM_DAY.isoformat()}T23:59:55+05:30"})
    before = _instrument_count(eng)
    _list(eng.sections["instruments"]["path"], SIM_DAY + dt.timedelta(days=1))
    assert _instrument_count(eng) == before  # the same day: nothing reloads by itself
    assert wait_until(lambda: _instrument_count(eng) == before + 1, timeout=15, interval=0.2)
    assert "instrument master reloaded (new trading day)" in eng.log.read_text()

