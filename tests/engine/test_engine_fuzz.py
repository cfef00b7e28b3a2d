"""No input crashes the engine or leaves an order without a recorded decision (hypothesis, over ZeroMQ).

Items are what sources really send when things go wrong: random bytes, JSON and msgpack of the wrong
shape, wrong types, huge numbers, unicode, near-orders with one bad field, and good orders in between.
"""
from __future__ import annotations

import json
import time
from contextlib import closing

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine import protocol
from engine_testkit import DECIDED, INSTRUMENTS

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
HUGE = st.one_of(st.integers(min_value=2**64), st.integers(max_value=-(2**63) - 1), st.just(10**30))
TEXT = st.text(max_size=80)  # every unicode category, including astral and combining characters


def _values(ints: st.SearchStrategy) -> st.SearchStrategy:
    scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), TEXT)
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(TEXT, inner, max_size=4)), max_leaves=8)


def _near_order(ints: st.SearchStrategy) -> st.SearchStrategy:
    """Maps shaped like orders and ticks: plausible values, any of them possibly replaced by junk."""
    junk = _values(ints)
    fields = {
        "client_order_id": st.one_of(st.from_regex(r"\Afz-[a-z0-9]{1,6}\Z"), junk),
        "symbol": st.one_of(st.sampled_from(sorted(INSTRUMENTS)), TEXT, junk),
        "side": st.one_of(st.sampled_from(["BUY", "SELL"]), junk),
        "quantity": st.one_of(st.sampled_from([1, 50, 100, 1000, 1050, 2300]), ints, junk),
        "price": st.one_of(st.sampled_from([100.0, 100.05, 99.95, 100.03, 1e9]), st.floats(), junk),
        "order_type": st.one_of(st.sampled_from(["LIMIT", "MARKET"]), junk),
        "account": st.one_of(st.sampled_from(["fz-a", "fz-b", ""]), junk),
        "kind": st.one_of(st.sampled_from(["order", "tick"]), junk),
        "ltp": st.one_of(st.sampled_from([100.0, 0.0, -1.0]), junk),
        "ts": st.one_of(ints, junk),
    }
    return st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda d: st.dictionaries(TEXT, junk, max_size=2).map(lambda extra: {**extra, **d}))


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _str8(b: bytes) -> msgspec.Raw:
    return msgspec.Raw(b"\xd9" + bytes([len(b)]) + b)


def _str8_keyed(b: bytes) -> msgspec.Raw:
    return msgspec.Raw(b"\x81" + bytes(_str8(b)) + b"\x01")


ITEMS = st.one_of(
    _near_order(INT64),                                            # msgpack maps
    _near_order(st.one_of(INT64, HUGE)).map(_json_bytes),           # JSON source payloads, any int size
    _values(INT64),                                                # msgpack of any shape
    _values(st.one_of(INT64, HUGE)).map(_json_bytes),
    st.binary(max_size=300),                                       # random bytes (a source payload)
    st.binary(max_size=60).map(_str8),                             # msgpack strings of any bytes,
    st.binary(max_size=60).map(_str8_keyed),                       # also as map keys (not always UTF-8)
    TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
def fuzz_engine(start_engine):
    return start_engine("fuzz", risk={"max_orders_per_second": 1_000_000}, broker={"fill_probability": 0.5})


class _Link:
    """One DEALER to the engine that notices at once when the engine process dies."""

    def __init__(self, eng) -> None:
        self.eng = eng
        self.sock = None
        self.rid = 0

    def ask(self, frame: bytes) -> protocol.Response:
        if not self.eng.alive:  # a previous example killed it: start it again for this one
            self.close()
            self.eng.start()
        if self.sock is None:
            self.sock = zmq.Context.instance().socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(self.eng.endpoint)
        self.sock.send(frame)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.sock.poll(20):
                return protocol.decode_response(self.sock.recv())
            if not self.eng.alive:
                self.close()
                raise AssertionError(f"the engine process died on this input; log tail:\n"
                                     f"{self.eng.log.read_text()[-1200:]}")
        raise AssertionError("no answer from the engine")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.fixture(scope="module")
def link(fuzz_engine):
    lk = _Link(fuzz_engine)
    yield lk
    lk.close()


@FUZZ
@given(items=st.lists(ITEMS, min_size=1, max_size=6), kind=st.sampled_from(["submit_order", "ingest"]),
       with_ids=st.booleans(), data=st.data())
@example(items=[b'{"client_order_id": "fz-big", "quantity": 1000000000000000000000000000000}'],
         kind="ingest", with_ids=False, data=None)
@example(items=[{"kind": "tick", "symbol": "FUTA", "ltp": 10**19}], kind="submit_order", with_ids=False, data=None)
@example(items=[msgspec.Raw(b"\xa1\x80")], kind="submit_order", with_ids=False, data=None)  # str, not UTF-8
@example(items=[msgspec.Raw(b"\x81\xa4side\xa1\x80")], kind="ingest", with_ids=False, data=None)
def test_submit_when_items_are_arbitrary_then_each_answered_and_recorded(fuzz_engine, link, items, kind,
                                                                         with_ids, data):
    msg_ids = [data.draw(TEXT) for _ in items] if with_ids and data is not None else None
    resp = link.ask(protocol.request(kind, 1, items, msg_ids=msg_ids))
    assert resp.ok, resp.error
    assert len(resp.results) == len(items)
    keys = []
    for d in resp.results:
        assert d["status"] in DECIDED | {"ACCEPTED"}, d
        if d["status"] == "REJECTED":
            assert d["reasons"], d
        if d["client_order_id"] == "":  # only a tick has no key
            assert d["status"] == "ACCEPTED" or d["reasons"][0].startswith("UNKNOWN_SYMBOL"), d
        else:
            keys.append(d["client_order_id"])
    with closing(fuzz_engine.store()) as s:
        missing = [k for k in keys if s.get_decision(k) is None]
    assert not missing, f"answered without a recorded decision: {missing}"


@FUZZ
@given(frame=st.one_of(
    st.binary(max_size=200),
    st.binary(min_size=1, max_size=40).map(lambda b: b"\x82\xa4kind\xacsubmit_order\xa5items\x91" + b),
    st.dictionaries(st.sampled_from(["kind", "id", "v", "items", "msg_ids", "args"]), _values(INT64),
                    max_size=6).map(msgspec.msgpack.encode),
    st.fixed_dictionaries({"kind": st.sampled_from(sorted(protocol.KINDS)), "id": INT64, "v": st.integers(0, 2),
                           "items": st.lists(_values(INT64), max_size=3),
                           "args": st.dictionaries(st.sampled_from(["key", "value", "account", "client_order_id",
                                                                    "reason"]), _values(INT64))},
                          optional={"msg_ids": st.lists(TEXT, max_size=3)}).map(msgspec.msgpack.encode),
))
@example(frame=b"\x81\xa4kind\xa1\x80")  # a kind that is not UTF-8
@example(frame=msgspec.msgpack.encode({"kind": "submit_order", "items": [1], "msg_ids": [msgspec.Raw(b"\xa1\xff")]}))
def test_request_when_frame_is_arbitrary_then_answered_and_engine_keeps_serving(fuzz_engine, link, frame):
    resp = link.ask(frame)
    if not resp.ok:
        assert resp.error and resp.error.startswith(("SCHEMA", "BROKER_PENDING")), resp
    assert link.ask(protocol.request("health", 2)).ok
