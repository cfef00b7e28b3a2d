"""Every reason code of the gate, reached through the ZeroMQ interface of a real engine process.

Validation failures are REJECTED with one reason; breached limits are ESCALATED with every reason,
delivered through the durable outbox to the configured sink, and never sent to the broker.
"""
from __future__ import annotations

import json
from contextlib import closing

import pytest

from engine_testkit import (SIM_START_NS, codes, market, one, order, positions, send_ticks, submit, tick,
                            wait_until)


def escalations_delivered(eng) -> dict[str, dict]:
    path = eng.dir / "data" / "escalations.jsonl"
    if not path.exists():
        return {}
    return {e["escalation_id"]: e for e in map(json.loads, path.read_text().splitlines())}


def assert_rejected(eng, d: dict, code: str) -> None:
    assert d["status"] == "REJECTED", d
    assert codes(d) == [code], d
    assert d["client_order_id"] not in eng.broker_calls()


def assert_escalated(eng, d: dict, expected_codes: list[str]) -> None:
    assert d["status"] == "ESCALATED", d
    assert codes(d) == expected_codes, d
    assert d["client_order_id"] not in eng.broker_calls()
    # forwarded to the risk-management system through the outbox (here: the log-file sink)
    delivered = wait_until(lambda: escalations_delivered(eng).get(d["escalation_id"]), timeout=10)
    assert delivered, f"escalation {d['escalation_id']} never reached the sink"
    assert delivered["client_order_id"] == d["client_order_id"]
    assert delivered["reasons"] == d["reasons"]
    assert delivered["order"]["quantity"] == d["quantity"]


# ---------------------------------------------------------------------------------------------
# validation -> REJECTED


def test_submit_order_when_msgpack_map_lacks_side_then_rejected_schema_and_recorded(gate_engine, gate):
    d = one(gate, {"client_order_id": "v-schema-1", "symbol": "LOTF", "quantity": 1, "price": 100.0})
    assert_rejected(gate_engine, d, "SCHEMA")
    assert "side" in d["reasons"][0]
    assert gate.call("get_order", args={"client_order_id": "v-schema-1"}).data["status"] == "REJECTED"


def test_ingest_when_payload_is_not_json_then_rejected_schema_under_message_id(gate_engine, gate):
    d = submit(gate, b"\x00{ not json", kind="ingest", msg_ids=["src-garbage-1"])[0]
    assert d["status"] == "REJECTED" and d["reasons"][0].startswith("SCHEMA"), d
    assert d["client_order_id"] == "!src-garbage-1"
    with _store(gate_engine) as s:
        assert s.get_decision("!src-garbage-1").status == "REJECTED"


def test_submit_order_when_limit_order_has_no_price_then_rejected_schema(gate_engine, gate):
    d = one(gate, order("v-schema-2", price=None))
    assert_rejected(gate_engine, d, "SCHEMA")
    assert "price" in d["reasons"][0]


def test_submit_order_when_market_order_has_price_then_rejected_schema(gate_engine, gate):
    d = one(gate, order("v-schema-3", order_type="MARKET"))
    assert_rejected(gate_engine, d, "SCHEMA")


def test_submit_order_when_account_not_in_allowlist_then_rejected_unknown_account_unless_closing_out(
        start_engine):
    eng = start_engine("accounts", risk={"accounts": ["desk-a", "desk-b"]})
    with eng.client() as c:
        assert one(c, order("acc-b-open", account="desk-b", quantity=3))["status"] == "FILLED"
        typo = one(c, order("acc-typo", account="desk-A"))
        assert_rejected(eng, typo, "UNKNOWN_ACCOUNT")
        assert "desk-A" in typo["reasons"][0]
        # an order without an account is for "default", which is not on the list either
        assert_rejected(eng, one(c, {k: v for k, v in order("acc-none").items() if k != "account"}),
                        "UNKNOWN_ACCOUNT")
    assert eng.stop() == 0
    eng.configure(risk={"accounts": ["desk-a"]})  # desk-b taken off the list, holding 3 long
    eng.start()
    with eng.client() as c:
        assert_rejected(eng, one(c, order("acc-b-add", account="desk-b")), "UNKNOWN_ACCOUNT")
        assert_rejected(eng, one(c, order("acc-b-flip", account="desk-b", side="SELL", quantity=4)),
                        "UNKNOWN_ACCOUNT")
        assert one(c, order("acc-b-close", account="desk-b", side="SELL", quantity=3))["status"] == "FILLED"
        assert positions(c, "desk-b")["LOTF"]["net_qty"] == 0
        assert_rejected(eng, one(c, order("acc-b-again", account="desk-b", side="SELL")), "UNKNOWN_ACCOUNT")
        assert one(c, order("acc-a", account="desk-a"))["status"] == "FILLED"
    eng.stop()


def test_submit_order_when_symbol_unknown_then_rejected_unknown_symbol(gate_engine, gate):
    d = one(gate, order("v-unknown-1", symbol="NOSUCHFUT"))
    assert_rejected(gate_engine, d, "UNKNOWN_SYMBOL")
    assert "NOSUCHFUT" in d["reasons"][0]


def test_submit_order_when_contract_expired_then_rejected_instrument_expired(gate_engine, gate):
    d = one(gate, order("v-expired-1", symbol="OLDF", quantity=50))
    assert_rejected(gate_engine, d, "INSTRUMENT_EXPIRED")


def test_submit_order_when_quantity_not_lot_multiple_then_rejected(gate_engine, gate):
    d = one(gate, order("v-lot-1", symbol="FUTA", quantity=75))
    assert_rejected(gate_engine, d, "QTY_NOT_LOT_MULTIPLE")
    assert "lot=50" in d["reasons"][0]


def test_submit_order_when_price_off_tick_then_rejected(gate_engine, gate):
    d = one(gate, order("v-tick-1", symbol="FUTA", quantity=50, price=100.03))
    assert_rejected(gate_engine, d, "PRICE_NOT_TICK_MULTIPLE")


def test_submit_order_when_price_on_tick_with_float_noise_then_filled(gate, gate_engine):
    d = one(gate, order("v-tick-2", symbol="FUTA", quantity=50, price=0.1 + 0.2, account="tick-ok"))
    assert d["status"] == "FILLED", d


def test_submit_order_when_account_exceeds_orders_per_second_then_rejected_order_rate(gate_engine, gate):
    batch = [order(f"v-rate-{i}", account="rate-acct") for i in range(11)]
    results = submit(gate, *batch)
    assert [r["status"] for r in results[:10]] == ["FILLED"] * 10
    assert_rejected(gate_engine, results[10], "ORDER_RATE")
    # another account is not throttled by this one's rate
    assert one(gate, order("v-rate-other", account="rate-other"))["status"] == "FILLED"


def test_submit_order_when_known_id_has_other_content_then_rejected_duplicate_id_mismatch(gate_engine, gate):
    first = one(gate, order("v-dup-1", account="dup-acct"))
    assert first["status"] == "FILLED"
    d = one(gate, order("v-dup-1", account="dup-acct", quantity=2))
    assert d["status"] == "REJECTED" and codes(d) == ["DUPLICATE_ID_MISMATCH"], d
    assert gate_engine.broker_calls()["v-dup-1"] == 1
    kept = gate.call("get_order", args={"client_order_id": "v-dup-1"}).data
    assert kept["status"] == "FILLED" and kept["quantity"] == 1


# ---------------------------------------------------------------------------------------------
# risk limits -> ESCALATED (to the outbox, never to the broker)


def test_submit_order_when_above_freeze_quantity_then_escalated_qty_above_freeze(gate_engine, gate):
    d = one(gate, order("l-freeze-1", symbol="FUTA", quantity=1050, account="freeze"))
    assert_escalated(gate_engine, d, ["QTY_ABOVE_FREEZE"])
    assert d["escalation_id"] == "E-l-freeze-1"


def test_submit_order_when_at_largest_legal_quantity_then_filled(gate, gate_engine):
    d = one(gate, order("l-freeze-2", symbol="FUTA", quantity=1000, account="freeze-ok"))
    assert d["status"] == "FILLED", d


def test_submit_order_when_too_many_lots_then_escalated_max_order_lots(gate_engine, gate):
    d = one(gate, order("l-lots-1", symbol="LOTF", quantity=31, account="lots"))
    assert_escalated(gate_engine, d, ["MAX_ORDER_LOTS"])


def test_submit_order_when_value_above_max_notional_then_escalated(gate_engine, gate):
    d = one(gate, order("l-notional-1", symbol="GRSF", quantity=2000, price=600.0, account="notional"))
    assert_escalated(gate_engine, d, ["MAX_NOTIONAL"])


def test_submit_order_when_limit_price_outside_band_then_escalated_price_band(gate_engine, gate):
    send_ticks(gate, tick("BANDF", 100.0))
    d = one(gate, order("l-band-1", symbol="BANDF", quantity=50, price=111.0, account="band"))
    assert_escalated(gate_engine, d, ["PRICE_BAND"])
    low = one(gate, order("l-band-2", symbol="BANDF", side="SELL", quantity=50, price=89.0, account="band"))
    assert_escalated(gate_engine, low, ["PRICE_BAND"])
    edge = one(gate, order("l-band-3", symbol="BANDF", quantity=50, price=110.0, account="band"))
    assert edge["status"] == "FILLED", edge


def test_submit_order_when_market_order_has_no_last_price_then_escalated_no_reference_price(gate_engine, gate):
    d = one(gate, market("l-noref-1", "NORF", account="noref"))
    assert_escalated(gate_engine, d, ["NO_REFERENCE_PRICE"])


def test_submit_order_when_market_order_has_last_price_then_filled_at_it(gate, gate_engine):
    send_ticks(gate, tick("TICKF", 123.45))
    d = one(gate, market("l-mkt-1", "TICKF", account="mkt"))
    assert d["status"] == "FILLED" and d["fill_price"] == 123.45, d


def test_submit_order_when_position_would_exceed_limit_in_same_batch_then_escalated_max_position(gate_engine, gate):
    # the first two are still pending at the broker when the third is judged: pending counts as filled
    results = submit(gate, order("l-pos-1", symbol="FUTA", quantity=1000, account="pos"),
                     order("l-pos-2", symbol="FUTA", quantity=1000, account="pos"),
                     order("l-pos-3", symbol="FUTA", quantity=50, account="pos"))
    assert [r["status"] for r in results[:2]] == ["FILLED", "FILLED"]
    assert_escalated(gate_engine, results[2], ["MAX_POSITION"])
    # reducing the position is always allowed
    d = one(gate, order("l-pos-4", symbol="FUTA", side="SELL", quantity=1000, account="pos"))
    assert d["status"] == "FILLED", d


def test_submit_order_when_gross_exposure_would_exceed_limit_then_escalated(gate_engine, gate):
    first = [one(gate, order(f"l-gross-{i}", symbol="GRSF", quantity=9000, account="gross")) for i in (1, 2)]
    assert [d["status"] for d in first] == ["FILLED", "FILLED"]
    d = one(gate, order("l-gross-3", symbol="GRSF", quantity=9000, account="gross"))
    assert_escalated(gate_engine, d, ["MAX_GROSS_EXPOSURE"])


def test_submit_order_when_gross_exposure_exceeded_within_one_batch_then_escalated(gate_engine, gate):
    """A batch must be as safe as one order at a time: the pending orders of the batch are exposure
    even when the symbol has no last price yet."""
    results = submit(gate, *[order(f"l-grossb-{i}", symbol="GRSF", quantity=9000, account="gross-batch")
                             for i in (1, 2, 3)])
    assert [r["status"] for r in results[:2]] == ["FILLED", "FILLED"]
    assert_escalated(gate_engine, results[2], ["MAX_GROSS_EXPOSURE"])


def test_submit_order_when_past_daily_loss_limit_then_escalated_but_reducing_passes(gate_engine, gate):
    assert one(gate, order("l-loss-1", symbol="LOSF", quantity=100, price=100.0, account="loss"))["status"] == "FILLED"
    send_ticks(gate, tick("LOSF", 40.0))  # mark-to-market: (40 - 100) x 100 = -6000 < -5000
    adding = one(gate, order("l-loss-2", symbol="LOSF", quantity=100, price=40.0, account="loss"))
    assert_escalated(gate_engine, adding, ["DAILY_LOSS_LIMIT"])
    reducing = one(gate, order("l-loss-3", symbol="LOSF", side="SELL", quantity=100, price=40.0, account="loss"))
    assert reducing["status"] == "FILLED", reducing
    pos = positions(gate, "loss")["LOSF"]
    assert pos["net_qty"] == 0 and pos["realised_pnl"] == pytest.approx(-6000.0)
    # flat, but the realised loss of the day still blocks new risk in either direction
    opening_short = one(gate, order("l-loss-4", symbol="LOSF", side="SELL", quantity=100, price=40.0,
                                    account="loss"))
    assert_escalated(gate_engine, opening_short, ["DAILY_LOSS_LIMIT"])


def test_day_pnl_when_fills_open_then_close_then_only_realised_changes_are_recorded(gate_engine, gate):
    def recorded() -> list[tuple[str, float]]:
        with closing(gate_engine.store()) as s:
            s.counts()  # applies what the tables lack
            return s.db.execute("SELECT day, realised FROM day_pnl WHERE account = 'dpnl'").fetchall()

    assert one(gate, order("dp-1", symbol="FUTA", quantity=100, price=100.0, account="dpnl"))["status"] == "FILLED"
    assert wait_until(lambda: positions(gate, "dpnl").get("FUTA", {}).get("net_qty") == 100)
    assert recorded() == []  # an opening fill realises nothing: no row to write
    assert one(gate, order("dp-2", symbol="FUTA", side="SELL", quantity=50, price=110.0,
                           account="dpnl"))["status"] == "FILLED"
    assert wait_until(lambda: [r for _, r in recorded()] == [pytest.approx(500.0)]), recorded()
    assert one(gate, order("dp-3", symbol="FUTA", quantity=50, price=100.0, account="dpnl"))["status"] == "FILLED"
    assert one(gate, order("dp-4", symbol="FUTA", side="SELL", quantity=100, price=99.0,
                           account="dpnl"))["status"] == "FILLED"
    assert wait_until(lambda: [r for _, r in recorded()] == [pytest.approx(500.0 - 100.0)]), recorded()


def test_submit_order_when_selling_option_on_expiry_day_after_cutoff_then_escalated(gate_engine, gate):
    d = one(gate, order("l-expiry-1", symbol="OPTX", side="SELL", quantity=50, price=10.0, account="expiry"))
    assert_escalated(gate_engine, d, ["EXPIRY_DAY_SHORT_OPTION"])
    assert "cutoff=14:00" in d["reasons"][0]


def test_submit_order_when_closing_long_option_on_expiry_day_then_filled(gate, gate_engine):
    buy = one(gate, order("l-expiry-2", symbol="OPTX", quantity=50, price=10.0, account="expiry-long"))
    sell = one(gate, order("l-expiry-3", symbol="OPTX", side="SELL", quantity=50, price=10.0, account="expiry-long"))
    assert (buy["status"], sell["status"]) == ("FILLED", "FILLED"), (buy, sell)
    # a short in an option that does not expire today is not an expiry-day short
    other = one(gate, order("l-expiry-4", symbol="OPTY", side="SELL", quantity=50, price=10.0, account="expiry-long"))
    assert other["status"] == "FILLED", other


def test_submit_order_when_several_limits_breached_then_every_reason_listed(gate_engine, gate):
    send_ticks(gate, tick("ALLF", 100.0))
    d = one(gate, order("l-all-1", symbol="ALLF", quantity=2050, price=111.0, account="all"))
    assert_escalated(gate_engine, d, ["QTY_ABOVE_FREEZE", "MAX_ORDER_LOTS", "PRICE_BAND", "MAX_POSITION"])


# ---------------------------------------------------------------------------------------------
# execution


def test_submit_order_when_broker_fills_then_filled_with_price_trade_and_position(gate_engine, gate):
    d = one(gate, order("x-fill-1", symbol="FUTA", quantity=100, price=101.5, account="exec"))
    assert d["status"] == "FILLED" and not d.get("reasons"), d
    assert d["fill_price"] == 101.5 and d["filled_qty"] == 100
    assert d["trade_id"] and d["trade_id"].startswith("T")
    assert gate_engine.broker_calls()["x-fill-1"] == 1
    with _store(gate_engine) as s:
        trades = s.trades("x-fill-1")
        assert [(t.trade_id, t.quantity, t.price, t.side) for t in trades] == [(d["trade_id"], 100, 101.5, "BUY")]
    assert positions(gate, "exec")["FUTA"]["net_qty"] == 100


def test_submit_order_when_resent_with_same_content_then_original_decision_marked_duplicate(gate_engine, gate):
    first = one(gate, order("x-idem-1", account="idem"))
    again = one(gate, order("x-idem-1", account="idem"))
    assert again["duplicate"] is True and first.get("duplicate", False) is False
    assert {k: v for k, v in again.items() if k != "duplicate"} == first
    assert gate_engine.broker_calls()["x-idem-1"] == 1
    assert positions(gate, "idem")["LOTF"]["net_qty"] == 1


def test_submit_order_when_same_id_twice_in_one_batch_then_one_execution_and_duplicate(gate_engine, gate):
    a, b = submit(gate, order("x-idem-2", account="idem-batch"), order("x-idem-2", account="idem-batch"))
    assert a["status"] == "FILLED" and not a.get("duplicate")
    assert b["duplicate"] is True and b["trade_id"] == a["trade_id"]
    assert gate_engine.broker_calls()["x-idem-2"] == 1
    assert positions(gate, "idem-batch")["LOTF"]["net_qty"] == 1


def test_submit_order_when_same_id_other_content_in_one_batch_then_second_is_mismatch(gate_engine, gate):
    a, b = submit(gate, order("x-idem-3", account="idem-batch2"), order("x-idem-3", account="idem-batch2", quantity=3))
    assert a["status"] == "FILLED"
    assert b["status"] == "REJECTED" and codes(b) == ["DUPLICATE_ID_MISMATCH"]
    assert gate_engine.broker_calls()["x-idem-3"] == 1


def test_ingest_when_garbage_redelivered_with_same_message_id_then_same_decision_duplicate(gate):
    first = submit(gate, b"]]]", kind="ingest", msg_ids=["src-redeliver-1"])[0]
    again = submit(gate, b"]]]", kind="ingest", msg_ids=["src-redeliver-1"])[0]
    assert first["status"] == "REJECTED" and again["duplicate"] is True
    assert again["reasons"] == first["reasons"] and again["client_order_id"] == first["client_order_id"]


def test_ingest_when_json_order_then_decided_like_a_msgpack_order(gate):
    payload = json.dumps(order("x-json-1", account="json")).encode()
    d = submit(gate, payload, kind="ingest")[0]
    assert d["status"] == "FILLED" and d["client_order_id"] == "x-json-1", d


# ---------------------------------------------------------------------------------------------
# positions and P&L over a sequence of fills


def test_positions_when_fills_add_reduce_and_flip_then_net_average_and_pnl_correct(gate_engine, gate):
    acct = "pnl"

    def fill(coid: str, side: str, qty: int, price: float) -> None:
        d = one(gate, order(coid, symbol="PNLF", side=side, quantity=qty, price=price, account=acct))
        assert d["status"] == "FILLED" and d["fill_price"] == price, d

    fill("p-1", "BUY", 50, 100.0)
    fill("p-2", "BUY", 100, 110.0)
    p = positions(gate, acct)["PNLF"]
    avg = (50 * 100.0 + 100 * 110.0) / 150
    assert p["net_qty"] == 150 and p["avg_price"] == pytest.approx(avg, abs=1e-4)
    assert p["realised_pnl"] == 0 and p["unrealised_pnl"] == 0  # no tick yet

    fill("p-3", "SELL", 50, 112.0)
    realised = (112.0 - avg) * 50
    p = positions(gate, acct)["PNLF"]
    assert p["net_qty"] == 100 and p["avg_price"] == pytest.approx(avg, abs=1e-4)
    assert p["realised_pnl"] == pytest.approx(realised, abs=0.01)

    send_ticks(gate, tick("PNLF", 115.0))
    p = positions(gate, acct)["PNLF"]
    assert p["ltp"] == 115.0 and p["unrealised_pnl"] == pytest.approx((115.0 - avg) * 100, abs=0.01)

    fill("p-4", "SELL", 250, 105.0)  # closes 100 long, opens 150 short at the fill price
    realised += (105.0 - avg) * 100
    p = positions(gate, acct)["PNLF"]
    assert p["net_qty"] == -150 and p["avg_price"] == pytest.approx(105.0)
    assert p["realised_pnl"] == pytest.approx(realised, abs=0.01)
    assert p["unrealised_pnl"] == pytest.approx((115.0 - 105.0) * -150, abs=0.01)

    fill("p-5", "BUY", 150, 104.0)  # covers the short
    realised += (105.0 - 104.0) * 150
    p = positions(gate, acct)["PNLF"]
    assert p["net_qty"] == 0 and p["realised_pnl"] == pytest.approx(realised, abs=0.01)
    assert p["unrealised_pnl"] == 0

    with _store(gate_engine) as s:  # the durable copy agrees with the live book
        row = s.positions(acct)[0]
        assert (row.symbol, row.net_qty) == ("PNLF", 0) and row.realised_pnl == pytest.approx(realised, abs=0.01)


def test_tick_when_older_than_last_then_recorded_but_price_unchanged(gate, gate_engine):
    assert one(gate, order("t-late-1", symbol="TICKF", quantity=50, price=123.45, account="late"))["status"] == "FILLED"
    send_ticks(gate, tick("TICKF", 120.0))  # stamped now by the engine
    send_ticks(gate, tick("TICKF", 90.0, ts=SIM_START_NS))  # before that
    assert positions(gate, "late")["TICKF"]["ltp"] == 120.0
    with _store(gate_engine) as s:
        assert s.last_prices()["TICKF"][0] == 120.0
        recorded = s.ticks("TICKF", limit=100)
        assert recorded[0].ltp == 120.0 and recorded[-1].ltp == 90.0  # newest first; the older one recorded


def test_tick_when_symbol_unknown_then_rejected_and_engine_keeps_serving(gate):
    resp = gate.call("tick", [tick("NOSUCH", 10.0), {"symbol": "FUTA"}, tick("BANDF", 100.0)])
    assert resp.ok
    assert [r["status"] for r in resp.results] == ["REJECTED", "REJECTED", "ACCEPTED"]
    assert codes(resp.results[0]) == ["UNKNOWN_SYMBOL"] and codes(resp.results[1]) == ["SCHEMA"]


# ---------------------------------------------------------------------------------------------


def _store(eng):
    return closing(eng.store())
