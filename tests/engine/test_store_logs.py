"""The SQLite store's logs: position changes, trades and ticks are appended and folded into their
indexed tables in bulk; whatever the interleaving of commits, folds, reopenings and readers,
`positions()` is the latest state of every (account, symbol), `trades()` every trade (a trade id
once) and `ticks()` every tick, newest first - over real SQLite files."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

import pytest

from engine.models import Tick, Trade
from engine.store.base import CommitBatch, PositionRow
from engine.store.sqlite import SqliteStore

ACCOUNTS = ["a1", "a2", "b"]
SYMBOLS = ["NIFTY26DECFUT", "BANKNIFTY26DECFUT", "NIFTY26DEC24000CE"]
_FOLD_OR_REOPEN = st.sampled_from([("fold", None), ("reopen", None)])


def replay(path, log: str, steps, apply, check) -> None:
    """Run the steps against a real SQLite file: ("fold", _) folds `log` (every row it held, and it
    is empty after), ("reopen", _) closes the store and opens it again, any other step is
    `apply(store, kind, arg)`; `check(store)` after every step, and at the end with a reader, which
    counts the log's rows from the file."""
    store = SqliteStore(path, role="writer")
    try:
        for kind, arg in steps:
            if kind == "fold":
                logged = store.logged[log]
                assert store.fold(log) == logged
                assert store.db.execute(f"SELECT COUNT(*) FROM {log}").fetchone()[0] == 0
            elif kind == "reopen":
                store.close()
                store = SqliteStore(path, role="writer")
            else:
                apply(store, kind, arg)
            check(store)
        reader = SqliteStore(path)
        check(reader)
        assert reader.logged[log] == store.logged[log]  # counted from the file, not remembered
        reader.close()
    finally:
        store.close()


_row = st.builds(PositionRow, st.sampled_from(ACCOUNTS), st.sampled_from(SYMBOLS),
                 st.integers(-500, 500), st.floats(0, 1e5, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False))
_step = st.one_of(st.lists(_row, min_size=1, max_size=6).map(lambda rows: ("commit", rows)), _FOLD_OR_REOPEN)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_step, max_size=25))
def test_positions_when_changes_logged_and_folded_in_any_order_then_latest_state_of_each_key(tmp_path_factory, steps):
    model: dict[tuple[str, str], PositionRow] = {}

    def apply(store, _, rows):
        store.commit(CommitBatch(positions=rows))
        model.update(((r.account, r.symbol), r) for r in rows)

    def check(store):
        assert store.positions() == [model[k] for k in sorted(model)]
        for a in ACCOUNTS:
            assert store.positions(a) == [model[k] for k in sorted(model) if k[0] == a]

    replay(tmp_path_factory.mktemp("plog") / "p.db", "position_log", steps, apply, check)


def test_fold_when_a_key_changed_many_times_then_one_row_with_the_last_change(tmp_path):
    store = SqliteStore(tmp_path / "p.db", role="writer")
    for n in range(1, 6):
        store.commit(CommitBatch(positions=[PositionRow("a1", "NIFTY26DECFUT", 50 * n, 100.0 + n, float(n))]))
    assert store.logged["position_log"] == 5
    assert store.fold("position_log") == 5
    assert store.db.execute("SELECT * FROM positions").fetchall() == [("a1", "NIFTY26DECFUT", 250, 105.0, 5.0)]
    store.commit(CommitBatch(positions=[PositionRow("a1", "NIFTY26DECFUT", 0, 0.0, 9.0)]))
    assert store.positions("a1") == [PositionRow("a1", "NIFTY26DECFUT", 0, 0.0, 9.0)]  # the log overrides
    store.close()


def test_commit_in_line_when_log_reaches_the_fold_size_then_folded(tmp_path, monkeypatch):
    """With `writer = "inline"` no writer process folds: the committing store does, at the same size."""
    import engine.store.sqlite as sqlite_store

    monkeypatch.setitem(sqlite_store.FOLD_ROWS, "position_log", 3)
    store = SqliteStore(tmp_path / "p.db", role="writer")
    store.commit(CommitBatch(positions=[PositionRow("a1", s, 50, 1.0, 0.0) for s in SYMBOLS[:2]]))
    assert store.logged["position_log"] == 2
    store.commit(CommitBatch(positions=[PositionRow("b", SYMBOLS[2], -50, 2.0, 0.0)]))
    assert store.logged["position_log"] == 0
    assert store.db.execute("SELECT COUNT(*) FROM positions").fetchone()[0] == 3
    assert [p.net_qty for p in store.positions()] == [50, 50, -50]
    store.close()


_ticks = st.lists(st.tuples(st.sampled_from(SYMBOLS), st.integers(1, 10_000)), min_size=1, max_size=6)
_tick_step = st.one_of(_ticks.map(lambda ts: ("commit", ts)), _FOLD_OR_REOPEN)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_tick_step, max_size=25), limit=st.integers(1, 30))
def test_ticks_when_logged_and_folded_in_any_order_then_every_tick_newest_first(tmp_path_factory, steps, limit):
    model: list[Tick] = []

    def apply(store, _, rows):
        ticks = []
        for sym, price in rows:  # timestamps arriving in any order across commits, some equal
            ticks.append(Tick(sym, float(price), ((len(model) + len(ticks) + 1) * 7919) % 13))
        store.commit(CommitBatch(ticks=ticks))
        model.extend(ticks)

    def check(store):
        for sym in SYMBOLS:
            # newest first; of equal timestamps the later to arrive first (as the last price has it)
            want = [t for _, t in sorted(((t.ts, n), t) for n, t in enumerate(model) if t.symbol == sym)][::-1]
            assert store.ticks(sym, limit) == want[:limit]
        assert store.counts()["ticks"] == len(model)

    replay(tmp_path_factory.mktemp("tlog") / "t.db", "tick_log", steps, apply, check)


def test_commit_in_line_when_tick_log_reaches_the_fold_size_then_folded_into_the_indexed_table(tmp_path, monkeypatch):
    import engine.store.sqlite as sqlite_store

    monkeypatch.setitem(sqlite_store.FOLD_ROWS, "tick_log", 3)
    store = SqliteStore(tmp_path / "t.db", role="writer")
    store.commit(CommitBatch(ticks=[Tick(SYMBOLS[0], 10.0, 2), Tick(SYMBOLS[1], 20.0, 1)]))
    assert store.logged["tick_log"] == 2 and store.db.execute("SELECT COUNT(*) FROM ticks").fetchone()[0] == 0
    store.commit(CommitBatch(ticks=[Tick(SYMBOLS[0], 11.0, 3)]))
    assert store.logged["tick_log"] == 0
    assert store.db.execute("SELECT symbol, ts FROM ticks ORDER BY rowid").fetchall() == [
        (SYMBOLS[1], 1), (SYMBOLS[0], 2), (SYMBOLS[0], 3)]  # inserted in the index's order
    assert [t.ltp for t in store.ticks(SYMBOLS[0])] == [11.0, 10.0]
    store.close()


_trade_step = st.one_of(st.lists(st.sampled_from(["o1", "o2", "o3"]), min_size=1, max_size=5).map(lambda o: ("commit", o)),
                        st.integers(0, 30).map(lambda back: ("repeat", back)), _FOLD_OR_REOPEN)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_trade_step, max_size=25))
def test_trades_when_logged_and_folded_in_any_order_then_listed_by_order_and_a_trade_id_lands_once(
        tmp_path_factory, steps):
    model: list[Trade] = []
    ids = iter(range(1, 1_000_000))

    def trade(coid: str, price: float, ts: int) -> Trade:
        return Trade(f"T{next(ids):06d}", coid, "a1", SYMBOLS[0], "BUY", 50, price, ts)

    def apply(store, kind, arg):
        if kind == "commit":
            trades = [trade(coid, 100.0 + len(model) + n, ((len(model) + n + 1) * 7919) % 100_003)
                      for n, coid in enumerate(arg)]
            store.commit(CommitBatch(trades=trades))
            model.extend(trades)
        elif model:  # "repeat": a trade id already recorded, folded or not - nothing of the batch lands
            with pytest.raises(Exception, match="UNIQUE"):
                store.commit(CommitBatch(trades=[trade("o1", 1.0, 0), model[-1 - arg % len(model)]]))

    def check(store):
        by_time = sorted(model, key=lambda t: (t.ts, t.trade_id))
        assert store.trades() == by_time
        for coid in ("o1", "o2", "o3"):
            assert store.trades(coid) == [t for t in by_time if t.client_order_id == coid]
        assert store.counts()["trades"] == len(model)

    replay(tmp_path_factory.mktemp("trlog") / "t.db", "trade_log", steps, apply, check)
