"""The SQLite store's position log: changes are appended and folded into the positions table in
bulk; whatever the interleaving of commits, folds, reopenings and readers, `positions()` is the
latest state of every (account, symbol) - over real SQLite files."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from engine.store.base import CommitBatch, PositionRow
from engine.store.sqlite import SqliteStore

ACCOUNTS = ["a1", "a2", "b"]
SYMBOLS = ["NIFTY26DECFUT", "BANKNIFTY26DECFUT", "NIFTY26DEC24000CE"]

_row = st.builds(PositionRow, st.sampled_from(ACCOUNTS), st.sampled_from(SYMBOLS),
                 st.integers(-500, 500), st.floats(0, 1e5, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False))
_step = st.one_of(st.lists(_row, min_size=1, max_size=6).map(lambda rows: ("commit", rows)),
                  st.just(("fold", None)), st.just(("reopen", None)))


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_step, max_size=25))
def test_positions_when_changes_logged_and_folded_in_any_order_then_latest_state_of_each_key(tmp_path_factory, steps):
    path = tmp_path_factory.mktemp("plog") / "p.db"
    store = SqliteStore(path, role="writer")
    model: dict[tuple[str, str], PositionRow] = {}
    try:
        for kind, rows in steps:
            if kind == "commit":
                store.commit(CommitBatch(positions=rows))
                model.update(((r.account, r.symbol), r) for r in rows)
            elif kind == "fold":
                logged = store.unfolded
                assert store.fold_positions() == logged
                assert store.db.execute("SELECT COUNT(*) FROM position_log").fetchone()[0] == 0
            else:
                store.close()
                store = SqliteStore(path, role="writer")
            assert store.positions() == [model[k] for k in sorted(model)]
            for a in ACCOUNTS:
                assert store.positions(a) == [model[k] for k in sorted(model) if k[0] == a]
        reader = SqliteStore(path)
        assert reader.positions() == [model[k] for k in sorted(model)]
        assert reader.unfolded == store.unfolded  # counted from the file, not remembered
        reader.close()
    finally:
        store.close()


def test_fold_when_a_key_changed_many_times_then_one_row_with_the_last_change(tmp_path):
    store = SqliteStore(tmp_path / "p.db", role="writer")
    for n in range(1, 6):
        store.commit(CommitBatch(positions=[PositionRow("a1", "NIFTY26DECFUT", 50 * n, 100.0 + n, float(n))]))
    assert store.unfolded == 5
    assert store.fold_positions() == 5
    assert store.db.execute("SELECT * FROM positions").fetchall() == [("a1", "NIFTY26DECFUT", 250, 105.0, 5.0)]
    store.commit(CommitBatch(positions=[PositionRow("a1", "NIFTY26DECFUT", 0, 0.0, 9.0)]))
    assert store.positions("a1") == [PositionRow("a1", "NIFTY26DECFUT", 0, 0.0, 9.0)]  # the log overrides
    store.close()


def test_commit_in_line_when_log_reaches_the_fold_size_then_folded(tmp_path, monkeypatch):
    """With `writer = "inline"` no writer process folds: the committing store does, at the same size."""
    import engine.store.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "FOLD_ROWS", 3)
    store = SqliteStore(tmp_path / "p.db", role="writer")
    store.commit(CommitBatch(positions=[PositionRow("a1", s, 50, 1.0, 0.0) for s in SYMBOLS[:2]]))
    assert store.unfolded == 2
    store.commit(CommitBatch(positions=[PositionRow("b", SYMBOLS[2], -50, 2.0, 0.0)]))
    assert store.unfolded == 0
    assert store.db.execute("SELECT COUNT(*) FROM positions").fetchone()[0] == 3
    assert [p.net_qty for p in store.positions()] == [50, 50, -50]
    store.close()
