"""Settlement: broker results -> the order's decision, its trades and the position change.

Shared by the hot path and by crash reconciliation, so an order settles the same way whichever
path decided it.
"""
from __future__ import annotations

from engine.broker.base import BrokerOrder, BrokerResult
from engine.models import Child, Decision, Reason, Status, Trade, reason
from engine.risk.book import Book
from engine.store.base import CommitBatch, PositionRow

FILLED = Status.FILLED.value


def settle(parent: dict, broker_orders: list[BrokerOrder], results: dict[str, BrokerResult], book: Book,
           now_ns: int, trades: list[Trade], touched: set[tuple[str, str]], pending: bool = False) -> Decision:
    """Apply the fills to the book, append the trades, and return the parent order's decision.

    pending: the order is pending in the book (decided in this batch, not reconciled): it is no
    longer, once settled."""
    account, symbol, side = parent["account"], parent["symbol"], parent["side"]
    sign = 1 if side == "BUY" else -1
    children: list[Child] = []
    filled = 0
    value = 0.0
    failures: list[str] = []
    fills: list[tuple[int, float]] = []
    single = len(broker_orders) == 1
    for bo in broker_orders:
        r = results[bo.client_order_id]
        if r.status == FILLED and r.fill_price is not None:
            filled += bo.quantity
            value += bo.quantity * r.fill_price
            fills.append((sign * bo.quantity, r.fill_price))
            trades.append(Trade(r.trade_id or f"T-{bo.client_order_id}", bo.client_order_id, account, symbol, side,
                                bo.quantity, r.fill_price, now_ns))
        else:
            failures.append(r.reason or reason(Reason.BROKER_REJECTED))
        if not single:  # a single order's decision is its own outcome: no children to list
            children.append(Child(bo.client_order_id, bo.quantity, r.status, r.fill_price, r.trade_id, r.reason))
    book.settle(account, symbol, sign * parent["quantity"] if pending else 0, fills)
    if fills:
        touched.add((account, symbol))

    quantity = parent["quantity"]
    if filled == 0:
        status, reasons = Status.FAILED.value, failures
    elif filled < quantity:
        status = Status.FILLED.value
        reasons = [reason(Reason.PARTIALLY_FILLED, f"filled={filled} of {quantity}")] + failures
    else:
        status, reasons = Status.FILLED.value, []
    return Decision(
        client_order_id=parent["client_order_id"], status=status, reasons=reasons,
        fill_price=(round(value / filled, 4) if filled else None),
        trade_id=results[broker_orders[0].client_order_id].trade_id if single else None,
        filled_qty=filled, account=account, symbol=symbol, side=side, quantity=quantity,
        children=children, ts=now_ns)


def record_book_changes(book: Book, touched: set[tuple[str, str]], batch: CommitBatch) -> None:
    """Put the positions and day P&L that fills changed into the batch's commit."""
    for account, symbol in touched:
        p = book.positions[(account, symbol)]
        batch.positions.append(PositionRow(account, symbol, p.net_qty, p.avg_price, p.realised_pnl))
    for account, realised in book.realised_to_record({a for a, _ in touched}):
        batch.day_pnl.append((account, book.day, realised))
