"""Requests at and past the size bound, over ZeroMQ: refused whole with a reason, or decided in full -
never a crash. (Before the bound, one request of 20,000 orders made an intent record larger than its
log's segment and killed the engine; the source would have resent it after every restart.)"""
from __future__ import annotations

import time
from contextlib import closing

import msgspec
import zmq

from engine import protocol
from engine.intake import MAX_REMAINS_CHARS
from engine_testkit import NO_LIMITS, order

WIDE = "\U0001f4c8" * 256  # 4 bytes a character in UTF-8: the most a bad item's remains can weigh


def _garbage(n: int, tag: str) -> dict:
    """Not an order (twenty unknown fields of wide text), recorded as REJECTED/SCHEMA with its remains."""
    return {"nonsense": f"{tag}-{n}", **{f"{WIDE[:60]}{k}": WIDE for k in range(19)}}


def test_request_when_more_items_than_the_bound_then_refused_whole_with_why_and_engine_serves_on(start_engine):
    eng = start_engine("large-requests", risk=NO_LIMITS)
    with eng.client(timeout_s=30) as c:
        too_many = [order(f"lr-x{i}", symbol="LOTF", account=f"lr{i % 7}") for i in range(protocol.MAX_ITEMS + 1)]
        resp = c.call("submit_order", too_many)
        assert not resp.ok and resp.results is None
        assert f"at most {protocol.MAX_ITEMS} items" in resp.error and "SCHEMA" in resp.error

        at_bound = [order(f"lr-{i}", symbol="LOTF", account=f"lr{i % 7}") for i in range(protocol.MAX_ITEMS)]
        assert {d["status"] for d in c.submit(*at_bound)} == {"FILLED"}

        garbage = c.call("submit_order", [_garbage(i, "one") for i in range(protocol.MAX_ITEMS)])
        assert garbage.ok and len(garbage.results) == protocol.MAX_ITEMS
        assert {d["status"] for d in garbage.results} == {"REJECTED"}
        assert c.call("health").ok
    assert eng.alive
    with closing(eng.store()) as s:
        assert s.counts()["orders"] == 2 * protocol.MAX_ITEMS  # the refused request decided nothing
        assert any(kind == "bad_request" and "at most" in detail for kind, _, detail, _ in s.anomalies())
        assert s.get_decision("lr-x0") is None


def test_requests_when_a_flood_of_heavy_garbage_then_every_item_decided_and_recorded(start_engine):
    """Twenty requests of 500 bad items each, all in flight at once (~0.7 MB of decisions a batch):
    every item gets its one recorded decision and the engine serves on. (A journal group larger than
    a segment is split: test_batch_journal.py.)"""
    eng = start_engine("garbage-flood", risk=NO_LIMITS)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(eng.endpoint)
    requests = 20
    try:
        for r in range(requests):
            sock.send(protocol.request("submit_order", r + 1, [_garbage(i, f"f{r}") for i in range(protocol.MAX_ITEMS)]))
        answers = {}
        deadline = time.monotonic() + 90
        while len(answers) < requests and time.monotonic() < deadline:
            if sock.poll(1000):
                resp = protocol.decode_response(sock.recv())
                answers[resp.id] = resp
    finally:
        sock.close()
    assert len(answers) == requests and all(a.ok for a in answers.values())
    assert {d["status"] for a in answers.values() for d in a.results} == {"REJECTED"}
    assert eng.alive
    with closing(eng.store()) as s:
        assert s.counts()["orders"] == requests * protocol.MAX_ITEMS
        kept = s.decisions(limit=5)
    assert len(kept) == 5 and all(d.status == "REJECTED" for d in kept)


def test_bad_item_when_recorded_then_its_remains_are_bounded(start_engine):
    eng = start_engine("bad-remains", risk=NO_LIMITS)
    with eng.client() as c:
        (d,) = c.submit({"client_order_id": "br-1", **{f"f{k}": WIDE for k in range(19)}})
    assert d["status"] == "REJECTED"
    with closing(eng.store()) as s:
        row = s.db.execute("SELECT order_json FROM orders WHERE client_order_id = 'br-1'").fetchone()
    remains = msgspec.msgpack.decode(row[0])
    assert remains["client_order_id"] == "br-1"  # fields kept in the order sent, while there is room
    assert sum(len(k) + len(v) for k, v in remains.items()) <= MAX_REMAINS_CHARS
    assert len(row[0]) <= 4 * MAX_REMAINS_CHARS + 64


def test_set_checkpoint_when_value_oversized_then_refused_with_why_and_a_sane_one_kept(start_engine):
    eng = start_engine("large-checkpoint")
    with eng.client() as c:
        huge = c.call("set_checkpoint", args={"key": "shard-0", "value": "9" * (protocol.MAX_CHECKPOINT_VALUE + 1)})
        assert not huge.ok and f"at most {protocol.MAX_CHECKPOINT_VALUE}" in huge.error
        long_key = c.call("set_checkpoint", args={"key": "k" * (protocol.MAX_CHECKPOINT_KEY + 1), "value": "1"})
        assert not long_key.ok
        assert c.call("set_checkpoint", args={"key": "shard-0", "value": "4960001"}).ok
        assert c.call("get_checkpoint", args={"key": "shard-0"}).data == "4960001"
    assert eng.alive
