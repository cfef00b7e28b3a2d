"""The store contract (engine/store/base.py): one suite that every backend must pass.

The `store` fixture (conftest.py) gives a fresh SQLite store, or a Couchbase store when a cluster is
configured. A Couchbase bucket may hold other runs' documents, so every test works on ids, accounts
and symbols of its own and compares counts as differences.
"""
from __future__ import annotations

import time
import uuid

import pytest

from engine.broker.base import BrokerOrder
from engine.models import Child, Decision, Escalation, Tick, Trade
from engine.store.base import CommitBatch, Intent, Known, PositionRow

NOW = 1_795_000_000_000_000_000  # ns; every test's own timeline starts here


@pytest.fixture
def u() -> str:
    """A prefix unique to this test run, for ids, accounts and symbols."""
    return "k" + uuid.uuid4().hex[:10]


def order_dict(coid: str, account: str, symbol: str = "FUTA", side: str = "BUY", qty: int = 50) -> dict:
    return {"client_order_id": coid, "symbol": symbol, "side": side, "quantity": qty, "order_type": "LIMIT",
            "price": 100.0, "product": "NRML", "account": account, "kind": "order"}


def intent(coid: str, account: str, slices: int = 1, ts: int = NOW) -> Intent:
    ids = [coid] if slices == 1 else [f"{coid}#{i}" for i in range(1, slices + 1)]
    return Intent(coid, "h-" + coid, order_dict(coid, account),
                  [BrokerOrder(i, account, "FUTA", "BUY", 50, "LIMIT", 100.0) for i in ids], ts)


def decision(coid: str, account: str, status: str = "FILLED", ts: int = NOW, **kw) -> Decision:
    if status == "FILLED":
        kw.setdefault("fill_price", 100.0)
        kw.setdefault("trade_id", "T-" + coid)
        kw.setdefault("filled_qty", 50)
    return Decision(coid, status, account=account, symbol="FUTA", side="BUY", quantity=50, ts=ts, **kw)


def decided(coid: str, account: str, **kw) -> tuple[Decision, str, dict]:
    return decision(coid, account, **kw), "h-" + coid, order_dict(coid, account)


def escalation(coid: str, account: str, ts: int = NOW) -> Escalation:
    return Escalation("E-" + coid, coid, account, ["MAX_NOTIONAL: value=1 limit=0"], order_dict(coid, account), ts)


def mine(items, prefix: str, key=lambda x: x) -> list:
    return [x for x in items if key(x).startswith(prefix)]


# ---------------------------------------------------------------------------------------------
# lookup: pending vs decided


def test_lookup_when_id_unknown_then_absent(store, u):
    assert store.lookup([f"{u}-nope"]) == {}
    assert store.lookup([]) == {}
    assert store.get_decision(f"{u}-nope") is None


def test_commit_intents_when_committed_then_known_pending_without_decision(store, u):
    before = store.counts()
    store.commit_intents([intent(f"{u}-a", u), intent(f"{u}-b", u, slices=3)])
    known = store.lookup([f"{u}-a", f"{u}-b", f"{u}-c"])
    assert known == {f"{u}-a": Known("h-" + f"{u}-a", None), f"{u}-b": Known("h-" + f"{u}-b", None)}
    assert store.get_decision(f"{u}-a") is None
    pending = {i.client_order_id: i for i in store.pending_intents() if i.client_order_id.startswith(u)}
    assert pending == {f"{u}-a": intent(f"{u}-a", u), f"{u}-b": intent(f"{u}-b", u, slices=3)}
    assert [bo.client_order_id for bo in pending[f"{u}-b"].broker_orders] == [f"{u}-b#1", f"{u}-b#2", f"{u}-b#3"]
    after = store.counts()
    assert (after["pending"] - before["pending"], after["orders"] - before["orders"]) == (2, 0)


def test_commit_when_pending_intent_decided_then_decision_replaces_it(store, u):
    store.commit_intents([intent(f"{u}-a", u)])
    before = store.counts()
    d, h, o = decided(f"{u}-a", u)
    store.commit(CommitBatch(decisions=[(d, h, o)]))
    assert store.lookup([f"{u}-a"]) == {f"{u}-a": Known(h, d)}
    assert store.get_decision(f"{u}-a") == d
    assert not mine(store.pending_intents(), u, lambda i: i.client_order_id)
    after = store.counts()
    assert (after["pending"] - before["pending"], after["orders"] - before["orders"]) == (-1, 1)


def test_commit_when_decision_has_children_then_read_back_whole(store, u):
    kids = [Child(f"{u}-s#1", 1000, "FILLED", 100.0, "T1"), Child(f"{u}-s#2", 300, "FAILED", reason="BROKER_REJECTED")]
    d = Decision(f"{u}-s", "FILLED", ["PARTIALLY_FILLED: filled=1000 of 1300", "BROKER_REJECTED"], fill_price=100.0,
                 filled_qty=1000, account=u, symbol="FUTA", side="BUY", quantity=1300, children=kids, ts=NOW)
    store.commit(CommitBatch(decisions=[(d, "h", None)]))
    assert store.get_decision(f"{u}-s") == d


def test_lookup_when_many_ids_then_all_found(store, u):
    ids = [f"{u}-{i}" for i in range(1200)]
    store.commit(CommitBatch(decisions=[decided(c, u, status="REJECTED", reasons=["UNKNOWN_SYMBOL: X"]) for c in ids]))
    known = store.lookup(ids + [f"{u}-missing"] + ids[:5])
    assert set(known) == set(ids)
    assert known[ids[777]].decision.client_order_id == ids[777]


def test_get_decision_when_decided_without_order_then_found(store, u):
    d = Decision(f"!{u}-garbage", "REJECTED", ["SCHEMA: not JSON"], ts=NOW)
    store.commit(CommitBatch(decisions=[(d, "hash", None)]))
    assert store.get_decision(f"!{u}-garbage") == d


# ---------------------------------------------------------------------------------------------
# atomicity


def test_commit_when_one_trade_id_repeats_then_nothing_of_the_batch_lands(store, u):
    store.commit(CommitBatch(trades=[Trade(f"T-{u}", f"{u}-first", u, "FUTA", "BUY", 50, 100.0, NOW)]))
    store.commit_intents([intent(f"{u}-a", u)])
    before = store.counts()
    bad = CommitBatch(
        decisions=[decided(f"{u}-a", u), decided(f"{u}-b", u)],
        trades=[Trade(f"T-{u}-b", f"{u}-b", u, "FUTA", "BUY", 50, 100.0, NOW),
                Trade(f"T-{u}", f"{u}-a", u, "FUTA", "BUY", 50, 100.0, NOW)],  # already recorded
        positions=[PositionRow(u, "FUTA", 100, 100.0, 0.0)],
        day_pnl=[(u, "2026-11-24", -10.0)],
        ticks=[Tick(f"{u}-SYM", 101.0, NOW)],
        escalations=[escalation(f"{u}-c", u)],
        settings={f"{u}-setting": "1"},
        dropped_intents=[f"{u}-a"],
        anomalies=[("test", f"{u}-a", "detail", NOW)],
    )
    with pytest.raises(Exception):
        store.commit(bad)
    assert store.counts() == before
    assert store.lookup([f"{u}-a", f"{u}-b"]) == {f"{u}-a": Known("h-" + f"{u}-a", None)}
    assert [t.trade_id for t in store.trades(f"{u}-b")] == []
    assert store.positions(u) == [] and u not in store.day_pnl("2026-11-24")
    assert f"{u}-SYM" not in store.last_prices() and store.ticks(f"{u}-SYM") == []
    assert not mine(store.outbox_due(NOW + 1, limit=100_000), u, lambda i: i.escalation.account)
    assert f"{u}-setting" not in store.settings()
    assert not [a for a in store.anomalies() if a[1] == f"{u}-a"]
    # and the store still takes the next good batch
    store.commit(CommitBatch(decisions=[decided(f"{u}-a", u)]))
    assert store.get_decision(f"{u}-a").status == "FILLED"


def test_commit_when_decided_id_decided_again_then_rejected_and_batch_left_out(store, u):
    """A decision is written once: a second one for the same id fails the whole batch."""
    store.commit(CommitBatch(decisions=[decided(f"{u}-a", u)]))
    with pytest.raises(Exception):
        store.commit(CommitBatch(decisions=[decided(f"{u}-b", u), decided(f"{u}-a", u, status="FAILED")],
                                 settings={f"{u}-s": "1"}))
    assert store.get_decision(f"{u}-a").status == "FILLED"
    assert store.lookup([f"{u}-b"]) == {} and f"{u}-s" not in store.settings()


def test_commit_when_batch_empty_then_nothing_changes(store, u):
    before = store.counts()
    store.commit(CommitBatch())
    store.commit_intents([])
    assert store.counts() == before


# ---------------------------------------------------------------------------------------------
# upserts: positions, day P&L, settings


def test_commit_when_position_written_again_then_replaced(store, u):
    store.commit(CommitBatch(positions=[PositionRow(u, "FUTA", 100, 100.0, 0.0),
                                        PositionRow(u, "BANK", -30, 50.5, 0.0)]))
    store.commit(CommitBatch(positions=[PositionRow(u, "FUTA", -20, 104.0, 250.5)]))
    assert store.positions(u) == [PositionRow(u, "BANK", -30, 50.5, 0.0), PositionRow(u, "FUTA", -20, 104.0, 250.5)]
    assert mine(store.positions(), u, lambda p: p.account) == store.positions(u)
    assert store.positions(f"{u}-other") == []


def test_commit_when_day_pnl_written_again_then_replaced_per_account_and_day(store, u):
    store.commit(CommitBatch(day_pnl=[(u, "2026-11-24", -100.0), (u, "2026-11-23", 40.0),
                                      (u + "b", "2026-11-24", 7.0)]))
    store.commit(CommitBatch(day_pnl=[(u, "2026-11-24", -250.0)]))
    today = store.day_pnl("2026-11-24")
    assert (today[u], today[u + "b"]) == (-250.0, 7.0)
    assert store.day_pnl("2026-11-23")[u] == 40.0
    assert u not in store.day_pnl("2026-11-25")


def test_commit_when_settings_written_then_read_back_and_overwritten(store, u):
    store.commit(CommitBatch(settings={f"{u}-halted": "1", f"{u}-reason": "drill"}))
    mine_now = {k: v for k, v in store.settings().items() if k.startswith(u)}
    assert mine_now == {f"{u}-halted": "1", f"{u}-reason": "drill"}
    store.commit(CommitBatch(settings={f"{u}-halted": "0"}))
    assert store.settings()[f"{u}-halted"] == "0" and store.settings()[f"{u}-reason"] == "drill"


# ---------------------------------------------------------------------------------------------
# ticks and last prices


def test_commit_when_ticks_arrive_out_of_order_then_last_price_is_newest_by_ts(store, u):
    sym = f"{u}-SYM"
    store.commit(CommitBatch(ticks=[Tick(sym, 101.0, NOW + 20), Tick(sym, 99.0, NOW + 10)]))
    assert store.last_prices()[sym] == (101.0, NOW + 20)
    store.commit(CommitBatch(ticks=[Tick(sym, 98.0, NOW + 15)]))  # late: recorded, not the last price
    assert store.last_prices()[sym] == (101.0, NOW + 20)
    store.commit(CommitBatch(ticks=[Tick(sym, 103.0, NOW + 30)]))
    assert store.last_prices()[sym] == (103.0, NOW + 30)
    assert [(t.ltp, t.ts) for t in store.ticks(sym)] == [(103.0, NOW + 30), (101.0, NOW + 20), (98.0, NOW + 15),
                                                          (99.0, NOW + 10)]
    assert [t.ltp for t in store.ticks(sym, limit=2)] == [103.0, 101.0]
    assert store.ticks(f"{u}-OTHER") == []


def test_ticks_when_several_share_a_timestamp_then_the_later_is_newer_as_for_the_last_price(store, u):
    sym = f"{u}-TIE"
    store.commit(CommitBatch(ticks=[Tick(sym, 100.0, NOW), Tick(sym, 101.0, NOW), Tick(sym, 102.0, NOW)]))
    store.commit(CommitBatch(ticks=[Tick(sym, 99.0, NOW - 1)]))
    assert store.last_prices()[sym] == (102.0, NOW)
    assert [t.ltp for t in store.ticks(sym)] == [102.0, 101.0, 100.0, 99.0]
    assert [t.ltp for t in store.ticks(sym, limit=1)] == [102.0]


# ---------------------------------------------------------------------------------------------
# queries


def test_decisions_when_filtered_by_account_then_in_time_order_and_limited_to_the_latest(store, u):
    store.commit(CommitBatch(decisions=[decided(f"{u}-{i}", u, ts=NOW + 10 - i) for i in range(5)]
                 + [decided(f"{u}-x", u + "x")]))
    got = store.decisions(u)
    assert [d.client_order_id for d in got] == [f"{u}-{i}" for i in (4, 3, 2, 1, 0)]
    assert [d.client_order_id for d in store.decisions(u, limit=2)] == [f"{u}-1", f"{u}-0"]  # the latest two
    assert [d.client_order_id for d in store.decisions(u + "x")] == [f"{u}-x"]


def test_decisions_when_order_only_pending_then_not_listed(store, u):
    store.commit_intents([intent(f"{u}-p", u)])
    assert store.decisions(u) == []


def test_trades_when_recorded_then_listed_by_order_and_all(store, u):
    trades = [Trade(f"T{u}-1", f"{u}-a", u, "FUTA", "BUY", 50, 100.0, NOW),
              Trade(f"T{u}-2", f"{u}-a", u, "FUTA", "BUY", 25, 100.5, NOW + 1),
              Trade(f"T{u}-3", f"{u}-b", u, "FUTA", "SELL", 50, 99.0, NOW + 2)]
    before = store.counts()["trades"]
    store.commit(CommitBatch(trades=trades))
    assert store.trades(f"{u}-a") == trades[:2]
    assert store.trades(f"{u}-b") == trades[2:]
    assert mine(store.trades(), u, lambda t: t.account) == trades
    assert store.counts()["trades"] - before == 3


def test_trades_when_order_was_sliced_then_its_id_finds_the_slices_trades_and_no_neighbours(store, u):
    slices = [Trade(f"T{u}-s1", f"{u}-s#1", u, "FUTA", "BUY", 1000, 100.0, NOW),
              Trade(f"T{u}-s2", f"{u}-s#2", u, "FUTA", "BUY", 300, 100.0, NOW + 1)]
    neighbours = [Trade(f"T{u}-n1", f"{u}-s1", u, "FUTA", "BUY", 50, 100.0, NOW + 2),  # '1' sorts after '#'
                  Trade(f"T{u}-n2", f"{u}-s", u, "FUTA", "BUY", 50, 100.0, NOW + 3),   # the id itself: its own
                  Trade(f"T{u}-n3", f"{u}-r#1", u, "FUTA", "BUY", 50, 100.0, NOW + 4)]
    store.commit(CommitBatch(trades=slices + neighbours))
    assert store.trades(f"{u}-s") == slices + neighbours[1:2]
    assert store.trades(f"{u}-s#2") == slices[1:]
    assert store.trades(f"{u}-s1") == neighbours[:1]


def test_anomalies_when_recorded_then_listed_in_order(store, u):
    store.commit(CommitBatch(anomalies=[("bad_request", "", f"{u} one", NOW),
                                        ("duplicate_id_mismatch", f"{u}-a", "h", NOW + 1)]))
    store.commit(CommitBatch(anomalies=[("tick_rejected", f"{u}-SYM", "UNKNOWN_SYMBOL", NOW + 2)]))
    got = [a for a in store.anomalies() if u in a[1] or u in a[2]]
    assert got == [("bad_request", "", f"{u} one", NOW), ("duplicate_id_mismatch", f"{u}-a", "h", NOW + 1),
                   ("tick_rejected", f"{u}-SYM", "UNKNOWN_SYMBOL", NOW + 2)]


def test_counts_when_records_added_then_each_count_grows(store, u):
    before = store.counts()
    assert set(before) >= {"orders", "pending", "trades", "ticks", "outbox_pending"}
    store.commit_intents([intent(f"{u}-p", u)])
    store.commit(CommitBatch(decisions=[decided(f"{u}-a", u), decided(f"{u}-b", u)],
                             trades=[Trade(f"T{u}", f"{u}-a", u, "FUTA", "BUY", 50, 100.0, NOW)],
                             ticks=[Tick(f"{u}-S", 1.0, NOW)] * 3, escalations=[escalation(f"{u}-c", u)]))
    after = store.counts()
    assert {k: after[k] - before[k] for k in before} == {"orders": 2, "pending": 1, "trades": 1, "ticks": 3,
                                                         "outbox_pending": 1}


# ---------------------------------------------------------------------------------------------
# dropped intents (reconciliation)


def test_commit_when_intent_dropped_then_forgotten_and_decided_orders_untouched(store, u):
    store.commit_intents([intent(f"{u}-gone", u), intent(f"{u}-kept", u)])
    store.commit(CommitBatch(decisions=[decided(f"{u}-done", u)]))
    store.commit(CommitBatch(dropped_intents=[f"{u}-gone", f"{u}-done"],
                             anomalies=[("intent_dropped", f"{u}-gone", "never reached the broker", NOW)]))
    assert set(store.lookup([f"{u}-gone", f"{u}-kept", f"{u}-done"])) == {f"{u}-kept", f"{u}-done"}
    assert store.get_decision(f"{u}-done").status == "FILLED"  # dropping applies to pending intents only
    assert [i.client_order_id for i in mine(store.pending_intents(), u, lambda i: i.client_order_id)] == [f"{u}-kept"]
    assert ("intent_dropped", f"{u}-gone") in {(a[0], a[1]) for a in store.anomalies()}
    # the id is free again: judged afresh when its source redelivers it
    store.commit_intents([intent(f"{u}-gone", u)])
    assert store.lookup([f"{u}-gone"])[f"{u}-gone"].decision is None


# ---------------------------------------------------------------------------------------------
# escalation outbox


def _due(store, u, now):
    return {i.escalation.escalation_id: i for i in store.outbox_due(now, limit=100_000)
            if i.escalation.account == u}


def test_outbox_when_escalation_committed_then_due_from_its_time(store, u):
    e = escalation(f"{u}-a", u, ts=NOW + 100)
    store.commit(CommitBatch(decisions=[decided(f"{u}-a", u, status="ESCALATED", escalation_id=e.escalation_id)],
                             escalations=[e]))
    assert _due(store, u, NOW + 99) == {}
    due = _due(store, u, NOW + 100)
    assert list(due) == [e.escalation_id] and due[e.escalation_id].escalation == e
    assert due[e.escalation_id].attempts == 0


def test_outbox_when_retried_then_due_again_at_next_time_with_attempt_counted(store, u):
    e = escalation(f"{u}-a", u)
    store.commit(CommitBatch(escalations=[e]))
    store.outbox_retry(e.escalation_id, NOW + 500, "connection refused")
    assert _due(store, u, NOW + 499) == {}
    assert _due(store, u, NOW + 500)[e.escalation_id].attempts == 1
    store.outbox_retry(e.escalation_id, NOW + 900, "HTTP 503")
    assert _due(store, u, NOW + 900)[e.escalation_id].attempts == 2


def test_outbox_when_delivered_then_never_due_again(store, u):
    a, b = escalation(f"{u}-a", u), escalation(f"{u}-b", u)
    store.commit(CommitBatch(escalations=[a, b]))
    before = store.counts()["outbox_pending"]
    store.outbox_delivered([a.escalation_id], NOW + 1)
    assert list(_due(store, u, NOW + 10**12)) == [b.escalation_id]
    assert store.counts()["outbox_pending"] == before - 1


def test_outbox_when_due_limited_then_earliest_first(store, u):
    store.commit(CommitBatch(escalations=[escalation(f"{u}-{i}", u, ts=NOW - 10**15 + i) for i in (3, 1, 2)]))
    # these are the earliest entries any run can have (1e15 ns before the others), so they lead the list
    got = [i.escalation.escalation_id for i in store.outbox_due(NOW, limit=2)]
    store.outbox_delivered([f"E-{u}-{i}" for i in (1, 2, 3)], NOW)  # leave no early entries to later runs
    assert got == [f"E-{u}-1", f"E-{u}-2"]


def test_escalations_when_delivered_retried_or_waiting_then_listed_latest_with_their_state(store, u):
    late = time.time_ns() + 10**15  # later than anything any run commits: these are the latest
    esc = [escalation(f"{u}-{i}", u, ts=late + i) for i in range(3)]
    store.commit(CommitBatch(escalations=esc))
    store.outbox_delivered([esc[0].escalation_id], late + 10)
    store.outbox_retry(esc[1].escalation_id, late + 20, "HTTP 503 from the RMS")
    got = store.escalations(limit=3)
    assert [(g.escalation, g.attempts, g.delivered_ns, g.last_error) for g in got] == [
        (esc[0], 1, late + 10, None), (esc[1], 1, None, "HTTP 503 from the RMS"), (esc[2], 0, None, None)]
    assert [g.escalation.escalation_id for g in store.escalations(limit=2)] == [e.escalation_id for e in esc[1:]]
    store.outbox_delivered([e.escalation_id for e in esc[1:]], late + 30)  # leave nothing due to later runs


# ---------------------------------------------------------------------------------------------
# source checkpoints


def test_checkpoint_when_set_then_read_back_and_overwritten(store, u):
    assert store.get_checkpoint(f"{u}/shard-0") is None
    store.set_checkpoint(f"{u}/shard-0", "4960000000000000000001")
    store.set_checkpoint(f"{u}/shard-1", "7")
    assert store.get_checkpoint(f"{u}/shard-0") == "4960000000000000000001"
    store.set_checkpoint(f"{u}/shard-0", "4960000000000000000002")
    assert store.get_checkpoint(f"{u}/shard-0") == "4960000000000000000002"
    assert store.get_checkpoint(f"{u}/shard-1") == "7"


# ---------------------------------------------------------------------------------------------
# the writer lease: Couchbase's (SQLite's store is one engine's by a file lock, engine/server.py)


@pytest.mark.parametrize("store", ["couchbase"], indirect=True)
def test_writer_lease_when_two_engines_share_a_scope_then_one_holds_it_until_it_hands_it_over(store):
    from engine.store.lease import LeaseLost

    a, b = store.writer_lease(45, holder="contract-a"), store.writer_lease(45, holder="contract-b")
    try:
        assert a.try_acquire()
        assert not b.try_acquire()
        assert a.record.holder() == "contract-a"
        first = a.version
        a.renewed_at -= 16  # a third of the lease ago: due
        a.keep()
        assert a.version != first and a.record.holder() == "contract-a"
        stale = store.writer_lease(45, holder="contract-a")
        stale.version = first  # an old version removes nothing
        stale.release()
        assert not b.try_acquire()
        a.release()
        assert b.try_acquire() and b.record.holder() == "contract-b"
        a.version, a.renewed_at = first, a.clock() - 16  # a holder that missed the handover
        with pytest.raises(LeaseLost):
            a.keep()
    finally:
        a.release()
        b.release()
