"""`wojak book ...` against a running engine's store: what a trader reads is what the engine answered."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine_testkit import NO_LIMITS, one, order, send_ticks, tick, wojak_book, wojak_book_rows

REPO = Path(__file__).resolve().parents[2]


def test_book_when_engine_running_then_orders_trades_positions_and_ticks_as_answered(start_engine):
    eng = start_engine("book-cli", risk={**NO_LIMITS, "freeze_qty_policy": "slice"})
    with eng.client() as c:
        send_ticks(c, tick("FUTA", 100.0), tick("FUTA", 101.5))
        filled = one(c, order("bk-1", "FUTA", quantity=100, price=100.0, account="acc1"))
        sliced = one(c, order("bk-2", "FUTA", quantity=2300, price=100.0, account="acc1"))
        rejected = one(c, order("bk-3", "NOSUCH", account="acc2"))
        sold = one(c, order("bk-4", "FUTA", side="SELL", quantity=50, price=102.0, account="acc1"))
        assert [filled["status"], sliced["status"], rejected["status"], sold["status"]] == \
            ["FILLED", "FILLED", "REJECTED", "FILLED"]

        got = wojak_book_rows(eng, "orders")
        assert [(r["client_order_id"], r["status"]) for r in got] == [
            ("bk-1", "FILLED"), ("bk-2", "FILLED"), ("bk-3", "REJECTED"), ("bk-4", "FILLED")]
        assert got[2]["reasons"] == ["UNKNOWN_SYMBOL"]
        assert got[0]["trade_id"] == filled["trade_id"] and got[0]["time"].endswith("+05:30")
        assert [r["client_order_id"] for r in wojak_book_rows(eng, "orders", "--limit", "2")] == ["bk-3", "bk-4"]
        assert [r["client_order_id"] for r in wojak_book_rows(eng, "orders", "--account", "acc2")] == ["bk-3"]

        assert [(r["client_order_id"], r["quantity"]) for r in wojak_book_rows(eng, "trades", "--order", "bk-2")] == [
            ("bk-2#1", 1000), ("bk-2#2", 1000), ("bk-2#3", 300)]
        assert len(wojak_book_rows(eng, "trades")) == 5

        [pos] = wojak_book_rows(eng, "positions", "--account", "acc1")
        assert (pos["symbol"], pos["net_qty"], pos["ltp"]) == ("FUTA", 2350, 101.5)
        assert pos["realised_pnl"] == 100.0  # 50 sold at 102 against an average of 100
        assert pos["unrealised_pnl"] == round((101.5 - pos["avg_price"]) * 2350, 2)
        assert wojak_book_rows(eng, "positions", "--account", "nobody") == []

        assert [r["ltp"] for r in wojak_book_rows(eng, "ticks", "FUTA")] == [101.5, 100.0]

        table = wojak_book(eng, "orders", "--account", "acc2").splitlines()
        assert table[0].split()[:3] == ["time", "client_order_id", "account"]
        assert "bk-3" in table[1] and "UNKNOWN_SYMBOL" in table[1]
        assert wojak_book(eng, "trades", "--order", "nothing-here").strip() == "(none)"
    eng.stop()


def test_book_when_no_store_there_then_clear_error_and_nothing_created(tmp_path):
    out = subprocess.run([sys.executable, "-m", "wojak.cli", "book", "orders"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 1
    assert "no store at wojak-data/wojak.db" in out.stderr
    assert list(tmp_path.iterdir()) == []
