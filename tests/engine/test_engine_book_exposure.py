"""The book's incremental gross exposure and MTM equal a full revaluation at the same prices."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.risk.book import Book

SYMS = ["A", "B", "C"]
steps = st.lists(st.one_of(
    st.tuples(st.just("pend"), st.sampled_from(SYMS), st.integers(-500, 500).filter(bool),
              st.floats(1, 1000).map(lambda x: round(x, 2))),
    st.tuples(st.just("fill"), st.sampled_from(SYMS), st.integers(-500, 500).filter(bool),
              st.floats(1, 1000).map(lambda x: round(x, 2))),
    st.tuples(st.just("settle"), st.sampled_from(SYMS), st.integers(0, 3), st.floats(1, 1000).map(lambda x: round(x, 2))),
    st.tuples(st.just("end"), st.just(""), st.just(0), st.just(0.0)),
), max_size=40)


def brute(book: Book, account: str) -> tuple[float, float]:
    gross = mtm = 0.0
    for sym, line in book.lines(account).items():
        pos = book.positions.get((account, sym))
        held = pos.net_qty if pos else 0
        px = book.ltp.get(sym)
        gpx = px if px is not None else (pos.avg_price if held else line.pending_px)
        gross += abs(book.net(account, sym)) * gpx
        if held and px is not None:
            mtm += (px - pos.avg_price) * held
    return gross, mtm


@settings(max_examples=300, deadline=None)
@given(steps, st.dictionaries(st.sampled_from(SYMS), st.floats(1, 1000).map(lambda x: round(x, 2))))
def test_exposure_when_positions_change_then_incremental_equals_full_revaluation(ops, prices):
    book = Book(refresh_ns=10**18)  # never revalue: only the incremental path is exercised
    book.ltp.update(prices)
    book.begin_batch(1)
    book.gross_exposure("acct")  # first use values the account in full; from here on it is incremental
    sent: list[tuple[str, int]] = []  # orders pending, in the order sent
    for op, sym, qty, px in ops:
        if op == "pend":
            book.add_pending("acct", sym, qty, px)
            sent.append((sym, qty))
        elif op == "fill":
            book.apply_fill("acct", sym, qty, px)
        elif op == "settle":  # the oldest pending order of sym: filled in `qty` equal parts, or failed (0)
            mine = [o for o in sent if o[0] == sym]
            if not mine:
                continue
            sent.remove(mine[0])
            whole = mine[0][1]
            parts = [whole // qty] * (qty - 1) + [whole - whole // qty * (qty - 1)] if qty else []
            book.settle("acct", sym, whole, [(p, px) for p in parts if p])
        else:
            book.end_batch()
            sent.clear()
        for sym_ in SYMS:  # what is pending is exactly what was sent and not yet settled
            assert book.pending_qty("acct", sym_) == sum(q for s_, q in sent if s_ == sym_)
        gross, mtm = brute(book, "acct")
        assert abs(book.gross_exposure("acct") - gross) <= 1e-6 * max(1.0, gross)
        assert abs(book.mtm("acct") - mtm) <= 1e-6 * max(1.0, abs(mtm)) + 1e-6
