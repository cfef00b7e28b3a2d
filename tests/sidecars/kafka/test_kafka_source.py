"""KafkaSource in-process against the real broker, and its offset bookkeeping as a pure model."""
from __future__ import annotations

import time
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.kafka import KafkaSource, OffsetTracker, Settings, message_id
from tests.sidecars.kafka.kafka_helpers import Lane
from tests.support.sidecar_fixtures import wait_for


# -- OffsetTracker: the commit position never passes an unanswered offset ---------------------------
@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.lists(st.tuples(st.sampled_from(["deliver", "answer", "requeue"]),
                                               st.integers(0, 30)), max_size=200))
def test_tracker_when_any_interleaving_then_position_never_passes_unanswered(start, ops):
    t = OffsetTracker()
    delivered_upto = start  # offsets arrive in order; a requeued one comes round again
    answered: set[int] = set()
    flying: set[int] = set()
    for op, k in ops:
        if op == "deliver":
            off = start + k
            if off >= delivered_upto:  # the next new offset; below it, a redelivery after a seek
                off = delivered_upto
                delivered_upto += 1
            took = t.accept(off)
            assert took == (off not in flying and off not in answered)
            if took:
                flying.add(off)
        elif flying:
            off = sorted(flying)[k % len(flying)]
            flying.discard(off)
            if op == "answer":
                t.answered(off)
                answered.add(off)
            else:
                t.requeued(off)
        if t.position is not None:
            assert all(o in answered for o in range(start, t.position)), "committed past an unanswered offset"
            lowest_open = min((o for o in range(start, delivered_upto) if o not in answered), default=delivered_upto)
            assert t.position == lowest_open
    assert t.in_flight == len(flying)


def test_tracker_when_answers_arrive_out_of_order_then_position_moves_only_when_contiguous():
    t = OffsetTracker()
    for off in (5, 6, 7):
        assert t.accept(off)
    assert not t.answered(7) and t.position == 5
    assert not t.answered(6) and t.position == 5
    assert t.answered(5) and t.position == 8
    assert not t.accept(6), "an answered offset delivered again is not resent"


def test_message_id_when_topic_name_long_then_hashed_to_a_valid_key():
    assert message_id("orders", 2, 17) == "orders:2:17"
    long = message_id("t" * 200, 0, 1)
    assert long.startswith("kafka-") and len(long) <= 64 and long == message_id("t" * 200, 0, 1)


# -- KafkaSource against the broker -----------------------------------------------------------------
def _source(lane: Lane, window: int = 100, **kw) -> KafkaSource:
    s = Settings(bootstrap=lane.server.bootstrap, topics=(lane.topic,), tick_topics=(), group=lane.group,
                 dlq_topic=None, offset_reset="earliest", session_timeout_ms=6000, heartbeat_ms=500,
                 max_poll_interval_ms=300_000, commit_interval_s=0.0, fetch_wait_ms=50,
                 pause_after_s=kw.pop("pause_after_s", 0.5), receive_max=500, window=window)
    return KafkaSource(s)


def _receive(src: KafkaSource, want: int, timeout: float = 20.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += src.receive(want - len(got), 0.2)
    return got


def test_requeue_when_middle_message_unanswered_then_redelivered_alone_and_commit_waits_for_it(kafka):
    lane = Lane(kafka, f"rq-{uuid.uuid4().hex[:8]}", partitions=1)
    lane.create()
    lane.publish([f"m{i}".encode() for i in range(10)])
    src = _source(lane)
    try:
        first = _receive(src, 10)
        assert [m.payload for m in first] == [f"m{i}".encode() for i in range(10)]
        src.requeue(first[3], "engine said PENDING")
        for m in first[:3] + first[4:]:
            src.ack(m, {"status": "FILLED"})
        # A turn commits what is contiguous; it seeks back to offset 3 too, and on a loaded machine the
        # fetch may land before the turn returns: what it returns counts as delivered.
        again = src.receive(1, 0.0)
        wait_for(lambda: lane.committed() == {0: 3}, 10, "commit held at the unanswered offset 3")
        again += _receive(src, 1 - len(again))
        assert [m.msg_id for m in again] == [first[3].msg_id], "only the requeued message comes round again"
        assert src.receive(10, 0.5) == []
        src.ack(again[0], {"status": "FILLED"})
        src.receive(1, 0.0)
        wait_for(lane.all_committed, 10, "everything committed once offset 3 is answered")
    finally:
        src.close()


def test_window_full_and_engine_stalling_when_heartbeat_then_paused_until_half_answered(kafka):
    lane = Lane(kafka, f"bp-{uuid.uuid4().hex[:8]}", partitions=1)
    lane.create()
    lane.publish([f"m{i}".encode() for i in range(40)])
    src = _source(lane, window=10, pause_after_s=0.1)
    try:
        held = _receive(src, 10)
        src.heartbeat(held)
        assert not src._paused, "a fresh full window is a backlog, not a stall"
        time.sleep(0.2)
        src.heartbeat(held)
        assert src._paused
        assert src.receive(10, 1.0) == [], "a paused partition delivers nothing"
        for m in held[:4]:
            src.ack(m, {"status": "FILLED"})
        assert src._paused, "resumes only once half the window is answered"
        src.ack(held[4], {"status": "FILLED"})
        assert not src._paused
        more = _receive(src, 5)
        assert [m.payload for m in more] == [f"m{i}".encode() for i in range(10, 15)]
    finally:
        src.close()
