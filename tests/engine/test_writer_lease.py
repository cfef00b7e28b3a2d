"""The writer lease's protocol (engine/store/lease.py) on a record with Couchbase's semantics and a
clock the test moves: taken only when free, renewed every third of its time to live, lost to
another holder, given up before it can lapse when the store stops answering, handed over at a clean
stop - and, over the whole lifetime, never held by two at once."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from engine.store.lease import LeaseLost, WriterLease
from tests.support.lease_fakes import FakeClock, MemoryLeaseRecord

TTL = 60


def lease(record: MemoryLeaseRecord, clock: FakeClock, holder: str) -> WriterLease:
    return WriterLease(record, TTL, holder=holder, clock=clock)


def held_by_a() -> tuple[FakeClock, MemoryLeaseRecord, WriterLease]:
    clock = FakeClock()
    record = MemoryLeaseRecord(clock)
    a = lease(record, clock, "a")
    assert a.try_acquire()
    return clock, record, a


def test_try_acquire_when_free_then_taken_and_a_second_engine_stands_by():
    clock = FakeClock()
    record = MemoryLeaseRecord(clock)
    a, b = lease(record, clock, "a"), lease(record, clock, "b")
    assert a.try_acquire() and a.held
    assert not b.try_acquire() and not b.held
    assert record.holder() == "a"


def test_keep_when_a_third_of_the_ttl_passed_then_renewed_and_not_before():
    clock, record, a = held_by_a()
    first = a.version
    clock.advance(TTL / 3 - 1)
    a.keep()
    assert a.version == first  # not due yet: no store round trip
    clock.advance(2)
    a.keep()
    assert a.version != first and record.doc[2] == clock() + TTL  # renewed, with a fresh expiry
    for _ in range(10):  # kept for ten lifetimes: never lapses while kept
        clock.advance(TTL / 3 + 0.5)
        a.keep()
    assert record.holder() == "a"


def test_keep_when_another_engine_holds_it_then_lease_lost():
    clock, record, a = held_by_a()
    record.steal("b")
    clock.advance(TTL / 3 + 1)
    with pytest.raises(LeaseLost, match="another engine"):
        a.keep()
    assert not a.held
    with pytest.raises(LeaseLost):  # and stays lost
        a.keep()


def test_keep_when_store_stops_answering_then_retried_and_given_up_at_half_the_ttl_before_it_lapses():
    clock, record, a = held_by_a()
    expires = record.doc[2]
    record.unavailable = True
    clock.advance(TTL / 3 + 1)
    a.keep()  # not answered: tried again in a second, still held
    assert a.held
    while clock() - (expires - TTL) <= TTL / 2:
        a.keep()
        clock.advance(1)
    with pytest.raises(LeaseLost, match="not renewed"):
        a.keep()
    assert clock() < expires  # it stopped while the lease still held: nobody else could have it yet
    record.unavailable = False
    b = lease(record, clock, "b")
    assert not b.try_acquire()  # until it lapses
    clock.advance(expires - clock())
    assert b.try_acquire()


def test_release_when_clean_stop_then_a_standby_takes_over_at_once_and_a_late_release_removes_nothing():
    clock = FakeClock()
    record = MemoryLeaseRecord(clock)
    a, b = lease(record, clock, "a"), lease(record, clock, "b")
    a.try_acquire()
    a.release()
    assert b.try_acquire()
    stale = lease(record, clock, "a")
    stale.version = 1  # a's old version: removing by it must not touch b's
    stale.release()
    assert record.holder() == "b"


@settings(max_examples=200, deadline=None, database=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                st.sampled_from(["acquire", "keep", "release", "down", "up"]),
                                st.floats(0, TTL / 2)), max_size=60))
def test_lease_when_engines_act_in_any_order_then_never_two_believe_they_hold_it(steps):
    clock = FakeClock()
    record = MemoryLeaseRecord(clock)
    engines = {n: lease(record, clock, n) for n in "abc"}
    for name, action, wait in steps:
        clock.advance(wait)
        e = engines[name]
        if action == "acquire" and not e.held:
            try:
                e.try_acquire()
            except Exception:  # noqa: BLE001 - the store not answering
                pass
        elif action == "keep" and e.held:
            try:
                e.keep()
            except LeaseLost:
                pass
        elif action == "release":
            e.release()
        else:
            record.unavailable = action == "down"
        # Whoever believes it holds the lease can prove it: the record is its and unexpired.
        believers = [n for n, x in engines.items()
                     if x.held and clock() - x.renewed_at <= TTL / 2]
        assert len(believers) <= 1, (believers, record.doc)
        for n in believers:
            assert record.doc is not None and record.doc[0] == n and clock() < record.doc[2]
