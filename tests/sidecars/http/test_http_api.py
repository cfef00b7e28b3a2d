"""Every route and status code of the HTTP sidecar, over real HTTP to a real engine."""
from __future__ import annotations

import re
import socket
import uuid

import pytest
from http_support import ADMIN_TOKEN


def oid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def order(symbol: str, **kw) -> dict:
    o = {"client_order_id": oid(), "symbol": symbol, "side": "BUY", "quantity": 65, "price": 26000.0}
    o.update(kw)
    return o


def admin() -> dict:
    return {"authorization": f"Bearer {ADMIN_TOKEN}"}


# -- POST /v1/orders ---------------------------------------------------------------------------------
def test_post_order_when_valid_then_200_with_the_recorded_decision(api, engine, symbol):
    o = order(symbol, account="acct1", strategy="s1")
    r = api.post("/v1/orders", json=o)
    assert r.status_code == 200
    d = r.json()
    assert d["client_order_id"] == o["client_order_id"]
    assert d["status"] in ("FILLED", "FAILED")  # the sandbox fills 90%: both are recorded outcomes
    assert d["duplicate"] is False and isinstance(d["reasons"], list)
    assert engine.store().get_decision(o["client_order_id"]).status == d["status"]
    if d["status"] == "FILLED":
        assert d["fill_price"] == 26000.0 and d["trade_id"]


def test_post_order_when_resent_then_same_decision_marked_duplicate_and_one_broker_call(api, engine, symbol):
    o = order(symbol)
    first = api.post("/v1/orders", json=o).json()
    again = api.post("/v1/orders", json=o)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["status"] == first["status"]
    assert again.json().get("trade_id") == first.get("trade_id")
    assert engine.broker_calls()[o["client_order_id"]] == 1


def test_post_order_when_market_order_then_fills_at_the_last_tick(api, symbol):
    r = api.post("/v1/ticks", json={"symbol": symbol, "ltp": 26010.5})
    assert r.status_code == 202
    o = order(symbol, order_type="MARKET", account="mkt")
    del o["price"]
    for _ in range(5):  # the sandbox fails 10% of orders: a FILLED one proves the price
        d = api.post("/v1/orders", json=dict(o, client_order_id=oid("mkt"))).json()
        if d["status"] == "FILLED":
            assert d["fill_price"] == 26010.5
            break
    else:
        pytest.fail("no MARKET order filled in 5 attempts")
    api.post("/v1/ticks", json={"symbol": symbol, "ltp": 26000.0})


def test_post_order_when_limit_far_outside_band_then_200_escalated_with_reason(api, symbol):
    r = api.post("/v1/orders", json=order(symbol, price=29000.0))
    assert r.status_code == 200
    d = r.json()
    assert d["status"] == "ESCALATED"
    assert d["reasons"][0].startswith("PRICE_BAND")
    assert d["escalation_id"]


def test_post_order_when_quantity_not_a_lot_multiple_then_200_rejected(api, symbol):
    d = api.post("/v1/orders", json=order(symbol, quantity=100)).json()
    assert d["status"] == "REJECTED"
    assert d["reasons"][0].startswith("QTY_NOT_LOT_MULTIPLE")


@pytest.mark.parametrize("field, value, code", [
    ("quantity", "65", "SCHEMA"),
    ("quantity", -65, "SCHEMA"),
    ("side", "HOLD", "SCHEMA"),
    ("price", 0, "SCHEMA"),
    ("product", "CNC", "SCHEMA"),
])
def test_post_order_when_field_invalid_then_400_naming_field_and_engine_records_schema(api, engine, symbol,
                                                                                     field, value, code):
    o = order(symbol, **{field: value})
    r = api.post("/v1/orders", json=o)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == code and body["field"] == field
    assert body["recorded_as"] == o["client_order_id"]
    d = engine.store().get_decision(o["client_order_id"])
    assert d.status == "REJECTED" and d.reasons[0].startswith("SCHEMA")


def test_post_order_when_required_field_missing_then_400_naming_it(api, symbol):
    o = order(symbol)
    del o["side"]
    body = api.post("/v1/orders", json=o).json()
    assert (body["error"], body["field"]) == ("SCHEMA", "side")


def test_post_order_when_unknown_field_then_400_naming_it(api, symbol):
    body = api.post("/v1/orders", json=order(symbol, colour="red")).json()
    assert (body["error"], body["field"]) == ("SCHEMA", "colour")


def test_post_order_when_body_is_not_json_then_400_and_recorded_under_its_key(api, engine):
    r = api.post("/v1/orders", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "SCHEMA" and body["field"] is None and "not JSON" in body["detail"]
    key = body["recorded_as"]
    assert key.startswith("!")
    got = api.get(f"/v1/orders/{key}")
    assert got.status_code == 200 and got.json()["status"] == "REJECTED"


def test_post_order_when_body_is_a_tick_then_400_on_kind_and_no_tick_recorded(api, engine, symbol):
    before = len(engine.store().ticks(symbol, limit=10_000))
    r = api.post("/v1/orders", json={"kind": "tick", "symbol": symbol, "ltp": 1.0})
    assert r.status_code == 400 and r.json()["field"] == "kind"
    assert len(engine.store().ticks(symbol, limit=10_000)) == before


def test_post_order_when_id_reused_for_other_content_then_409_and_first_decision_kept(api, engine, symbol):
    o = order(symbol)
    first = api.post("/v1/orders", json=o).json()
    r = api.post("/v1/orders", json=dict(o, quantity=130))
    assert r.status_code == 409
    assert r.json()["error"] == "DUPLICATE_ID_MISMATCH"
    assert engine.store().get_decision(o["client_order_id"]).status == first["status"]
    assert engine.broker_calls()[o["client_order_id"]] == 1


def test_post_order_when_content_length_over_limit_then_413(api, symbol):
    r = api.post("/v1/orders", content=b'{"pad": "' + b"x" * 5000 + b'"}')
    assert r.status_code == 413
    assert r.json()["error"] == "BODY_TOO_LARGE"


def test_post_order_when_chunked_body_over_limit_then_413_before_the_body_ends(stack):
    """No Content-Length: the sidecar counts while reading and answers before the client finishes."""
    sidecar = stack[1]
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as s:
        s.sendall(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 5000
        s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))  # over the 4096 limit; the final chunk never comes
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


# -- POST /v1/ticks ------------------------------------------------------------------------------------
def test_post_ticks_when_a_list_then_202_and_last_price_moves(api, engine, symbol):
    r = api.post("/v1/ticks", json=[{"symbol": symbol, "ltp": 26001.0}, {"symbol": symbol, "ltp": 26002.0}])
    assert r.status_code == 202
    assert r.json() == {"accepted": 2, "rejected": []}
    assert engine.store().last_prices()[symbol][0] == 26002.0
    api.post("/v1/ticks", json={"symbol": symbol, "ltp": 26000.0})


def test_post_ticks_when_one_symbol_unknown_then_400_lists_it_and_the_rest_are_accepted(api, symbol):
    r = api.post("/v1/ticks", json=[{"symbol": symbol, "ltp": 26000.0}, {"symbol": "NOPE", "ltp": 1.0}])
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "UNKNOWN_SYMBOL" and body["accepted"] == 1
    assert body["rejected"][0]["index"] == 1


def test_post_ticks_when_price_invalid_then_400_naming_the_field(api, symbol):
    r = api.post("/v1/ticks", json=[{"symbol": symbol, "ltp": 26000.0}, {"symbol": symbol, "ltp": -3}])
    assert r.status_code == 400
    assert r.json()["field"] == "[1].ltp"


# -- GET ---------------------------------------------------------------------------------------------
def test_get_order_when_decided_then_200_with_it(api, symbol):
    o = order(symbol)
    d = api.post("/v1/orders", json=o).json()
    got = api.get(f"/v1/orders/{o['client_order_id']}")
    assert got.status_code == 200
    assert got.json()["status"] == d["status"] and got.json()["client_order_id"] == o["client_order_id"]


def test_get_order_when_unknown_then_404(api):
    r = api.get(f"/v1/orders/{oid('never')}")
    assert r.status_code == 404 and r.json()["error"] == "NOT_FOUND"


def test_get_order_when_id_malformed_then_400(api):
    r = api.get("/v1/orders/has%20space")
    assert r.status_code == 400 and r.json()["field"] == "client_order_id"


def test_get_positions_when_filled_then_position_with_pnl(api, symbol):
    account = oid("pos")
    filled = 0
    for _ in range(6):
        d = api.post("/v1/orders", json=order(symbol, account=account)).json()
        filled += d["status"] == "FILLED"
    api.post("/v1/ticks", json={"symbol": symbol, "ltp": 26100.0})
    r = api.get("/v1/positions", params={"account": account})
    assert r.status_code == 200
    [p] = r.json()["positions"]
    assert p["net_qty"] == 65 * filled
    assert p["unrealised_pnl"] == pytest.approx(100.0 * 65 * filled)
    api.post("/v1/ticks", json={"symbol": symbol, "ltp": 26000.0})


# -- kill switch ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {ADMIN_TOKEN}"}])
def test_halt_when_not_authorised_then_401_and_trading_continues(api, symbol, headers):
    r = api.post("/v1/halt", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert api.post("/v1/orders", json=order(symbol)).json()["status"] in ("FILLED", "FAILED")


def test_halt_when_authorised_then_new_orders_rejected_until_resume(api, symbol):
    r = api.post("/v1/halt", headers=admin(), json={"reason": "test drill"})
    assert r.status_code == 200 and r.json() == {"halted": True, "reason": "test drill"}
    try:
        d = api.post("/v1/orders", json=order(symbol, account=oid("halt"))).json()
        assert d["status"] == "REJECTED" and d["reasons"][0].startswith("TRADING_HALTED")
        assert api.get("/healthz").json()["halted"] is True
    finally:
        r = api.post("/v1/resume", headers=admin())
    assert r.status_code == 200 and r.json()["halted"] is False
    assert api.post("/v1/orders", json=order(symbol)).json()["status"] in ("FILLED", "FAILED")


# -- health, metrics, request ids ------------------------------------------------------------------------
def test_healthz_when_engine_up_then_200(api):
    r = api.get("/healthz")
    assert r.status_code == 200 and r.json()["engine"] == "up"


def test_metrics_when_orders_answered_then_counts_by_status_and_latency_histogram(api, symbol):
    api.post("/v1/orders", json=order(symbol, quantity=100))  # one REJECTED at least
    text = api.get("/metrics").text
    rejected = re.search(r'wojak_orders_total\{source="http",status="REJECTED"\} (\d+)', text)
    assert rejected and float(rejected.group(1)) >= 1
    assert 'wojak_answer_seconds_bucket{le="0.005",source="http"}' in text
    assert 'wojak_in_flight{source="http"}' in text and 'wojak_queue_depth{source="http"}' in text


def test_request_when_client_sends_request_id_then_echoed_and_logged(api, stack, symbol):
    rid = oid("rid")
    r = api.post("/v1/orders", json=order(symbol), headers={"x-request-id": rid})
    assert r.headers["x-request-id"] == rid
    assert f'"request_id": "{rid}"' in stack[1].log.read_text()


def test_request_when_request_id_unusable_then_a_fresh_one_is_given(api):
    r = api.get("/healthz", headers={"x-request-id": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
