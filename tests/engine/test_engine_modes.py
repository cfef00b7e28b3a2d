"""Engine configurations other than the gate suite's: freeze-quantity slicing, a broker that rejects
everything, and enforced market hours. Each runs a real engine process over ZeroMQ."""
from __future__ import annotations

import datetime as dt
from contextlib import closing

import pytest

from engine.clock import Clock
from engine.config import RiskSection
from engine.risk.context import Moment
from engine.risk.validate import check_market_hours
from engine_testkit import SIM_DAY, SIM_SATURDAY, codes, one, order, positions, send_ticks, tick

BIG_LIMITS = {"max_order_lots": 100, "max_notional": 1e9, "max_position_lots": 1000, "max_gross_exposure": 1e12}


@pytest.fixture(scope="module")
def slicing_engine(start_engine):
    return start_engine("slice", risk={**BIG_LIMITS, "freeze_qty_policy": "slice"})


@pytest.fixture(scope="module")
def rejecting_engine(start_engine):
    return start_engine("reject", broker={"fill_probability": 0.0}, risk={**BIG_LIMITS, "freeze_qty_policy": "slice"})


# ---------------------------------------------------------------------------------------------
# freeze_qty_policy = "slice"


def test_submit_order_when_above_freeze_and_policy_slice_then_split_into_legal_children(slicing_engine):
    with slicing_engine.client() as c:
        d = one(c, order("s-1", symbol="FUTA", quantity=2300, price=100.0, account="slice"))
        assert d["status"] == "FILLED" and not d.get("reasons"), d
        assert d["filled_qty"] == 2300 and d["fill_price"] == 100.0
        kids = d["children"]
        assert [(k["client_order_id"], k["quantity"], k["status"]) for k in kids] == [
            ("s-1#1", 1000, "FILLED"), ("s-1#2", 1000, "FILLED"), ("s-1#3", 300, "FILLED")]
        assert all(k["quantity"] % 50 == 0 and k["quantity"] < 1001 for k in kids)
        assert len({k["trade_id"] for k in kids}) == 3 and all(k["trade_id"] for k in kids)
        assert positions(c, "slice")["FUTA"]["net_qty"] == 2300
    calls = slicing_engine.broker_calls()
    assert {k: calls.get(k) for k in ("s-1", "s-1#1", "s-1#2", "s-1#3")} == {
        "s-1": None, "s-1#1": 1, "s-1#2": 1, "s-1#3": 1}
    with closing(slicing_engine.store()) as s:
        assert sorted(t.quantity for cid in ("s-1#1", "s-1#2", "s-1#3") for t in s.trades(cid)) == [300, 1000, 1000]
        by_parent = s.trades("s-1")  # the order's trade book: its slices' fills
        assert sorted((t.client_order_id, t.quantity) for t in by_parent) == [("s-1#1", 1000), ("s-1#2", 1000),
                                                                             ("s-1#3", 300)]
        assert {t.trade_id for t in by_parent} == {k["trade_id"] for k in kids}


def test_submit_order_when_at_largest_legal_quantity_and_policy_slice_then_not_split(slicing_engine):
    with slicing_engine.client() as c:
        d = one(c, order("s-2", symbol="FUTA", quantity=1000, price=100.0, account="slice-2"))
    assert d["status"] == "FILLED" and not d.get("children") and d["trade_id"], d
    assert slicing_engine.broker_calls()["s-2"] == 1


def test_submit_order_when_policy_slice_but_too_many_lots_then_escalated_max_order_lots_only(slicing_engine):
    with slicing_engine.client() as c:
        d = one(c, order("s-3", symbol="FUTA", quantity=101 * 50, price=100.0, account="slice-3"))
    assert d["status"] == "ESCALATED" and codes(d) == ["MAX_ORDER_LOTS"], d
    assert not any(k.startswith("s-3") for k in slicing_engine.broker_calls())


def test_submit_order_when_sliced_order_resent_then_duplicate_and_children_not_resent(slicing_engine):
    with slicing_engine.client() as c:
        first = one(c, order("s-4", symbol="FUTA", quantity=1200, price=100.0, account="slice-4"))
        again = one(c, order("s-4", symbol="FUTA", quantity=1200, price=100.0, account="slice-4"))
    assert again["duplicate"] is True and again["children"] == first["children"]
    calls = slicing_engine.broker_calls()
    assert (calls["s-4#1"], calls["s-4#2"]) == (1, 1)


# ---------------------------------------------------------------------------------------------
# a broker that rejects every order (fill_probability = 0)


def test_submit_order_when_broker_rejects_then_failed_broker_rejected_without_trade(rejecting_engine):
    with rejecting_engine.client() as c:
        d = one(c, order("f-1", account="fail"))
        assert d["status"] == "FAILED" and codes(d) == ["BROKER_REJECTED"], d
        assert d.get("filled_qty", 0) == 0 and d.get("fill_price") is None and d.get("trade_id") is None
        assert positions(c, "fail").get("LOTF", {"net_qty": 0})["net_qty"] == 0
        again = one(c, order("f-1", account="fail"))
        assert again["duplicate"] is True and again["status"] == "FAILED"
    assert rejecting_engine.broker_calls()["f-1"] == 1
    with closing(rejecting_engine.store()) as s:
        assert s.trades("f-1") == [] and s.get_decision("f-1").status == "FAILED"


def test_submit_order_when_every_slice_rejected_then_failed_with_each_child(rejecting_engine):
    with rejecting_engine.client() as c:
        d = one(c, order("f-2", symbol="FUTA", quantity=1500, price=100.0, account="fail-2"))
    assert d["status"] == "FAILED" and d.get("filled_qty", 0) == 0, d
    assert codes(d) == ["BROKER_REJECTED", "BROKER_REJECTED"]
    assert [(k["quantity"], k["status"]) for k in d["children"]] == [(1000, "FAILED"), (500, "FAILED")]


# ---------------------------------------------------------------------------------------------
# enforce_market_hours


def test_submit_order_when_market_closed_on_weekend_then_rejected_market_closed(start_engine):
    eng = start_engine("closed", engine={"simulated_start": SIM_SATURDAY}, risk={"enforce_market_hours": True})
    with eng.client() as c:
        d = one(c, order("c-1", account="closed"))
        assert d["status"] == "REJECTED" and codes(d) == ["MARKET_CLOSED"], d
        assert "weekend" in d["reasons"][0]
        send_ticks(c, tick("LOTF", 100.0))  # market data is still taken in
    assert "c-1" not in eng.broker_calls()
    eng.stop()


def test_submit_order_when_exchange_holiday_then_rejected_market_closed_in_session_hours(start_engine):
    # SIM_START is a Tuesday at 14:30, inside the session: only the holiday closes the market.
    eng = start_engine("holiday", risk={"enforce_market_hours": True, "holidays": [SIM_DAY]})
    with eng.client() as c:
        d = one(c, order("h-1", account="holiday"))
        assert d["status"] == "REJECTED" and codes(d) == ["MARKET_CLOSED"], d
        assert d["reasons"][0].endswith("holiday")
    assert "h-1" not in eng.broker_calls()
    eng.stop()


@pytest.mark.parametrize("holidays, closed", [([], False), ([dt.date(2026, 11, 24)], True),
                                              ([dt.date(2026, 11, 23), dt.date(2026, 11, 25)], False)])
def test_check_market_hours_when_day_is_a_holiday_then_closed_all_day(holidays, closed):
    risk = RiskSection(enforce_market_hours=True, holidays=holidays)
    now = Moment.at(Clock(risk.timezone, "2026-11-24T10:00:00+05:30"), risk)
    bad = check_market_hours(now, risk)
    assert (bad == "MARKET_CLOSED: now=10:00 hours=09:15-15:30 holiday") == closed, bad
    assert closed or bad is None


@pytest.mark.parametrize("hhmm, closed", [("09:14", True), ("09:15", False), ("15:29", False), ("15:30", True),
                                          ("20:00", True)])
def test_check_market_hours_when_weekday_at_time_then_closed_outside_session(hhmm, closed):
    risk = RiskSection(enforce_market_hours=True)
    now = Moment.at(Clock(risk.timezone, f"2026-11-24T{hhmm}:00+05:30"), risk)
    bad = check_market_hours(now, risk)
    assert (bad is not None and bad.startswith("MARKET_CLOSED")) == closed, bad
