"""Properties of the pure pieces of the gate (hypothesis): position netting, slicing, risk-reducing
orders, intake of arbitrary payloads, and config errors that name the offending key."""
from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from engine import intake
from engine.clock import Clock
from engine.config import Config, ConfigError, RiskSection, loads
from engine.instruments import Instrument
from engine.models import Order
from engine.risk.book import Book, PositionState
from engine.risk.gate import Gate
from engine.risk.context import Moment
from engine.risk.validate import check_expiry
from engine.risk.limits import is_reducing, slices

PROPS = settings(max_examples=300, deadline=None, database=None)

# fills as (signed quantity, price in paise): exact money arithmetic for the reference computation
FILLS = st.lists(st.tuples(st.integers(-5000, 5000).filter(bool), st.integers(5, 5_000_000)), min_size=1,
                 max_size=40)


# ---------------------------------------------------------------------------------------------
# PositionState.apply_fill


@PROPS
@given(FILLS)
def test_apply_fill_when_any_fill_sequence_then_quantity_and_pnl_conserved(fills):
    """Cash conservation: the realised P&L is exactly the cash the fills paid and received plus what
    the open quantity is worth at its average price."""
    pos = PositionState()
    realised_sum = 0.0
    net = 0
    cash = 0  # paise: sells bring cash in, buys pay it out
    for q, paise in fills:
        realised_sum += pos.apply_fill(q, paise / 100)
        net += q
        cash -= q * paise
        assert pos.net_qty == net
        if net == 0:
            assert pos.avg_price == 0.0
        else:
            assert pos.avg_price > 0
        # value the open quantity at its average price: what is left is exactly the realised P&L
        expected = cash / 100 + net * pos.avg_price
        assert pos.realised_pnl == pytest.approx(expected, rel=1e-9, abs=1e-3)
    assert pos.realised_pnl == pytest.approx(realised_sum, rel=1e-9, abs=1e-6)


@PROPS
@given(FILLS)
def test_apply_fill_when_compared_with_reference_average_cost_book_then_same(fills):
    """A straightforward reference: weighted average cost; closing realises against it; a flip opens
    the remainder at the fill price."""
    pos = PositionState()
    ref_net, ref_avg, ref_realised = 0, 0.0, 0.0
    for q, paise in fills:
        price = paise / 100
        pos.apply_fill(q, price)
        if ref_net == 0 or (ref_net > 0) == (q > 0):  # opening or adding
            ref_avg = (ref_avg * abs(ref_net) + price * abs(q)) / abs(ref_net + q)
            ref_net += q
        else:
            closing = min(abs(q), abs(ref_net))
            ref_realised += closing * (price - ref_avg) * (1 if ref_net > 0 else -1)
            remainder = abs(q) - closing
            ref_net += q
            ref_avg = 0.0 if ref_net == 0 else (price if remainder else ref_avg)
        assert (pos.net_qty, pos.avg_price) == (ref_net, pytest.approx(ref_avg, rel=1e-9))
        assert pos.realised_pnl == pytest.approx(ref_realised, rel=1e-9, abs=1e-6)


def test_apply_fill_when_long_flips_short_then_remainder_opens_at_fill_price():
    pos = PositionState()
    pos.apply_fill(100, 10.0)
    pnl = pos.apply_fill(-150, 12.0)
    assert pnl == pytest.approx(200.0)
    assert (pos.net_qty, pos.avg_price, pos.realised_pnl) == (-50, 12.0, pytest.approx(200.0))


# ---------------------------------------------------------------------------------------------
# the order-rate window and the expiry cutoff


@PROPS
@given(limit=st.integers(1, 20), gaps_ms=st.lists(st.integers(0, 400), min_size=1, max_size=80))
def test_take_rate_slot_when_orders_arrive_then_at_most_limit_in_any_second(limit, gaps_ms):
    book, now, taken = Book(), 10**18, []
    for gap in gaps_ms:
        now += gap * 1_000_000
        if book.take_rate_slot("acct", now, limit):
            taken.append(now)
    assert taken  # the first order always gets a slot
    for i, t in enumerate(taken):  # any window of one second holds at most `limit` taken slots
        assert sum(1 for u in taken[i:] if u - t < 1_000_000_000) <= limit
    assert book.take_rate_slot("other", now, limit)  # per account


@pytest.mark.parametrize("hhmm, expired", [("15:29", False), ("15:30", True)])
def test_check_expiry_when_contract_expires_today_then_expired_from_the_close(hhmm, expired):
    risk = RiskSection()
    now = Moment.at(Clock(risk.timezone, f"2026-11-24T{hhmm}:00+05:30"), risk)
    inst = Instrument("X", "IDX", "CE", dt.date(2026, 11, 24), 100.0, 50, 5, 1001)
    assert (check_expiry(inst, now) is not None) == expired


# ---------------------------------------------------------------------------------------------
# the account allowlist ([risk] accounts), through the gate

NAMES = st.sampled_from(["a", "b", "c", "default"])


@PROPS
@given(allowed=st.lists(NAMES, max_size=3, unique=True), account=NAMES,
       held=st.integers(-3, 3), side=st.sampled_from(["BUY", "SELL"]), lots=st.integers(1, 4))
def test_gate_when_allowlist_set_then_other_accounts_rejected_unless_only_reducing(allowed, account, held, side,
                                                                                  lots):
    risk = RiskSection(accounts=allowed, max_orders_per_second=1000)
    now = Moment.at(Clock(risk.timezone, "2026-11-24T10:00:00+05:30"), risk)
    inst = Instrument("X", "IDX", "FUT", dt.date(2026, 12, 29), None, 50, 5, 1801)
    book = Book(ltp={"X": 100.0})
    if held:
        book.load_position(account, "X", PositionState(held * 50, 100.0))
    o = Order(client_order_id="o1", symbol="X", side=side, quantity=lots * 50, price=100.0, account=account)
    verdict = Gate({"X": inst}, book, risk).evaluate(o, now)
    reducing = is_reducing(held * 50, o.signed_qty())
    refused = bool(allowed) and account not in allowed and not reducing
    assert (verdict.status == "REJECTED" and verdict.reasons[0].startswith("UNKNOWN_ACCOUNT")) == refused
    if refused:  # decided before anything is counted: no rate slot taken, nothing pending
        a = book.accounts.get(account)
        assert a is None or (not a.rate and all(not line.pending for line in a.lines.values()))
    else:  # the other checks decide as before (here: all pass)
        assert verdict.status == "SEND", verdict


# ---------------------------------------------------------------------------------------------
# slices() and is_reducing()


@PROPS
@given(lot=st.integers(1, 1000), lots=st.integers(1, 10_000), max_lots=st.integers(1, 100))
def test_slices_when_lot_multiples_then_sum_is_quantity_and_each_legal(lot, lots, max_lots):
    quantity, max_qty = lots * lot, max_lots * lot
    parts = slices(quantity, max_qty)
    assert sum(parts) == quantity
    assert all(0 < p <= max_qty and p % lot == 0 for p in parts)
    assert len(parts) == -(-quantity // max_qty)  # the fewest possible
    assert all(p == max_qty for p in parts[:-1])


@PROPS
@given(net=st.integers(-10**7, 10**7), qty=st.integers(-10**7, 10**7).filter(bool))
def test_is_reducing_when_any_position_and_order_then_true_iff_it_only_shrinks(net, qty):
    after = net + qty
    shrinks_without_flip = net != 0 and abs(after) < abs(net) and after * net >= 0
    assert is_reducing(net, qty) == shrinks_without_flip


# ---------------------------------------------------------------------------------------------
# intake: never raises; every non-tick has a key and a storable record

JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=5)),
    max_leaves=10)
ORDERISH = st.fixed_dictionaries({}, optional={
    "client_order_id": st.one_of(st.from_regex(r"\A[A-Za-z0-9._:-]{1,70}\Z"), JSONISH),
    "symbol": st.one_of(st.just("FUTA"), st.text()), "side": st.one_of(st.sampled_from(["BUY", "SELL"]), JSONISH),
    "quantity": st.one_of(st.integers(), JSONISH), "price": st.one_of(st.floats(), JSONISH),
    "kind": st.one_of(st.sampled_from(["order", "tick"]), JSONISH), "ltp": st.floats()})


def _check(item: intake.Item) -> None:
    if item.tick is not None:
        return
    assert item.key, item
    assert (item.order is None) != (item.error is None), item
    assert item.content_hash
    if item.error is not None:
        assert item.error.startswith("SCHEMA"), item
    msgspec.msgpack.encode(item.raw)  # what is recorded for a bad item must be storable


@PROPS
@given(data=st.one_of(st.binary(max_size=400), ORDERISH.map(lambda d: json.dumps(d).encode()),
                      JSONISH.map(lambda d: json.dumps(d).encode())),
       msg_id=st.one_of(st.none(), st.text(max_size=80)), want_tick=st.booleans())
@example(data=b'{"client_order_id": "big", "quantity": 100000000000000000000000}', msg_id=None, want_tick=False)
def test_parse_payload_when_any_bytes_then_never_raises_and_keys_every_order(data, msg_id, want_tick):
    _check(intake.parse_payload(data, msg_id, want_tick))


def _msgpackable(v) -> bool:
    try:
        msgspec.msgpack.encode(v)
        return True
    except (OverflowError, TypeError):
        return False


@PROPS
@given(obj=st.one_of(ORDERISH, JSONISH, st.binary(max_size=200)).filter(_msgpackable),
       msg_id=st.one_of(st.none(), st.text(max_size=80)), want_tick=st.booleans())
def test_parse_when_any_msgpack_item_then_never_raises_and_keys_every_order(obj, msg_id, want_tick):
    _check(intake.parse(msgspec.msgpack.encode(obj), msg_id, want_tick))


@PROPS
@given(data=st.binary(max_size=300), msg_id=st.one_of(st.none(), st.text(max_size=80)))
def test_parse_when_same_bad_bytes_twice_then_same_key(data, msg_id):
    a, b = intake.parse(data, msg_id), intake.parse(data, msg_id)
    assert (a.key, a.content_hash) == (b.key, b.content_hash)


@pytest.mark.parametrize("raw", [b"\xa1\x80", b"\x81\xa4side\xa1\xff", b"\x81\xa1\x80\x01"])
def test_parse_when_msgpack_string_is_not_utf8_then_keyed_schema_rejection(raw):
    item = intake.parse(raw, "src-7")
    assert item.error and item.error.startswith("SCHEMA") and item.key == "!src-7"


def test_parse_payload_when_source_message_id_given_then_garbage_keyed_by_it():
    """A redelivered bad message must map to its first decision by its source message id."""
    item = intake.parse_payload(b"not json", "sqs-msg-42")
    assert item.key == "!sqs-msg-42"


def test_parse_when_valid_order_then_same_content_hash_from_json_and_msgpack():
    o = {"client_order_id": "h-1", "symbol": "FUTA", "side": "BUY", "quantity": 50, "price": 100.0}
    from_json = intake.parse_payload(json.dumps(o).encode())
    from_msgpack = intake.parse(msgspec.msgpack.encode(o))
    assert from_json.order == from_msgpack.order == msgspec.convert(o, Order)
    assert from_json.content_hash == from_msgpack.content_hash


# ---------------------------------------------------------------------------------------------
# config: an unknown key or a wrong type is an error that names it

SECTIONS = sorted(Config.__struct_fields__)
KEY = st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z")


@PROPS
@given(section=st.sampled_from(SECTIONS), key=KEY)
def test_config_when_unknown_key_then_error_names_it(section, key):
    assume(key not in type(getattr(Config(), section)).__struct_fields__)
    with pytest.raises(ConfigError) as err:
        loads(f"[{section}]\n{key} = 1\n")
    assert key in str(err.value) and section in str(err.value)


@PROPS
@given(section=KEY.filter(lambda s: s not in SECTIONS))
def test_config_when_unknown_section_then_error_names_it(section):
    with pytest.raises(ConfigError) as err:
        loads(f"[{section}]\nx = 1\n")
    assert section in str(err.value)


@pytest.mark.parametrize("text, named", [
    ('[risk]\nmax_order_lots = "many"\n', "[risk] max_order_lots"),
    ("[risk]\nprice_band_pct = 0\n", "[risk] price_band_pct"),
    ('[risk]\nmarket_open = "9am"\n', "[risk] market_open"),
    ('[risk]\nmarket_open = "16:00"\n', "[risk] market_open"),
    ('[risk]\ntimezone = "Mars/Olympus"\n', "[risk] timezone"),
    ('[engine]\nsimulated_start = "2026-11-24T10:00:00"\n', "[engine] simulated_start"),
    ('[engine]\nendpoint = "udp://x"\n', "[engine] endpoint"),
    ('[escalation]\nkind = "http"\n', "[escalation] url"),
    ("[broker]\nfill_probability = 1.5\n", "[broker] fill_probability"),
    ("[risk\n", "not valid TOML"),
])
def test_config_when_value_invalid_then_error_names_key(text, named):
    with pytest.raises(ConfigError) as err:
        loads(text)
    assert named in str(err.value)


def test_config_when_empty_then_defaults_are_valid():
    cfg = loads("")
    assert cfg.risk.max_orders_per_second == 10 and cfg.risk.freeze_qty_policy == "escalate"
