"""Step 2 of the gate: fixed risk limits. Every breached limit is listed; any breach ESCALATES.

An escalated order goes to the full risk-management system instead of the broker. Limits that
guard against adding risk (position, gross exposure, daily loss, expiry-day shorts) let a
risk-reducing order through; fat-finger guards (freeze, size, notional, price band) never do.
"""
from __future__ import annotations

from engine.config import RiskSection
from engine.instruments import Instrument
from engine.models import Order, Reason, reason
from engine.risk.book import Book
from engine.risk.context import Moment


def slices(quantity: int, max_qty: int) -> list[int]:
    """Split a quantity into exchange-legal child quantities (all lot multiples if both inputs are)."""
    full, rest = divmod(quantity, max_qty)
    return [max_qty] * full + ([rest] if rest else [])


def check_limits(order: Order, inst: Instrument, book: Book, now: Moment, risk: RiskSection,
                 net: int, reducing: bool) -> tuple[list[str], float | None]:
    """All breached limits (empty = pass) and the price the order is valued at."""
    out: list[str] = []
    qty = order.quantity
    lots = qty // inst.lot_size
    if qty > inst.max_order_qty and risk.freeze_qty_policy == "escalate":
        out.append(reason(Reason.QTY_ABOVE_FREEZE, f"qty={qty} freeze={inst.freeze_qty} max={inst.max_order_qty}"))
    if lots > risk.max_order_lots:
        out.append(reason(Reason.MAX_ORDER_LOTS, f"lots={lots} limit={risk.max_order_lots}"))

    ltp = book.ltp.get(order.symbol)
    price = order.price if order.order_type == "LIMIT" else ltp
    if price is None:
        out.append(reason(Reason.NO_REFERENCE_PRICE, f"symbol={order.symbol}"))
    else:
        if qty * price > risk.max_notional:
            out.append(reason(Reason.MAX_NOTIONAL, f"value={qty * price:.0f} limit={risk.max_notional:.0f}"))
        if ltp is not None and order.order_type == "LIMIT" and abs(price - ltp) * 100 > risk.price_band_pct * ltp:
            out.append(reason(Reason.PRICE_BAND, f"limit={price} ltp={ltp} band={risk.price_band_pct}%"))

    if not reducing:
        new_net = net + order.signed_qty()
        new_lots = abs(new_net) // inst.lot_size
        if new_lots > risk.max_position_lots:
            out.append(reason(Reason.MAX_POSITION, f"net_lots={new_lots} limit={risk.max_position_lots}"))
        if price is not None:
            gross = book.gross_exposure(order.account) + (abs(new_net) - abs(net)) * price
            if gross > risk.max_gross_exposure:
                out.append(reason(Reason.MAX_GROSS_EXPOSURE, f"gross={gross:.0f} limit={risk.max_gross_exposure:.0f}"))
        pnl = book.day_pnl(order.account)
        if pnl < -risk.daily_loss_limit:
            out.append(reason(Reason.DAILY_LOSS_LIMIT, f"pnl={pnl:.0f} limit=-{risk.daily_loss_limit:.0f}"))
        if (inst.is_option and inst.expiry == now.today and now.past_expiry_cutoff
                and order.side == "SELL" and new_net < 0):
            out.append(reason(Reason.EXPIRY_DAY_SHORT_OPTION,
                              f"expiry={inst.expiry.isoformat()} cutoff={risk.expiry_day_cutoff}"))
    return out, price


def is_reducing(net: int, signed_qty: int) -> bool:
    """An order that only shrinks an open position (never opens or flips one) reduces risk."""
    return net != 0 and (net > 0) != (signed_qty > 0) and abs(signed_qty) <= abs(net)
