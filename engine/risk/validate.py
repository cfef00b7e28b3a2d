"""Step 1 of the gate: validation. The first failing check decides, and the order is REJECTED.

Checks run in this fixed order; each returns a reason string or None:
schema rules a type cannot say -> UNKNOWN_ACCOUNT -> UNKNOWN_SYMBOL -> INSTRUMENT_EXPIRED -> QTY_NOT_LOT_MULTIPLE ->
PRICE_NOT_TICK_MULTIPLE -> MARKET_CLOSED -> TRADING_HALTED -> ORDER_RATE.
(DUPLICATE_ID_MISMATCH is decided before any of these, by the idempotency lookup in the engine.)
"""
from __future__ import annotations

from engine.instruments import Instrument
from engine.models import Order, Reason, reason
from engine.risk.context import Moment
from engine.risk.book import Book
from engine.config import RiskSection


def price_paise(price: float) -> int | None:
    """Exact paise for a price with at most two decimals, else None."""
    paise = round(price * 100)
    return paise if abs(price * 100 - paise) < 1e-6 else None


def check_shape(order: Order) -> str | None:
    if order.order_type == "LIMIT" and order.price is None:
        return reason(Reason.SCHEMA, "price: required for a LIMIT order")
    if order.order_type == "MARKET" and order.price is not None:
        return reason(Reason.SCHEMA, "price: not allowed for a MARKET order")
    return None


def check_account(order: Order, accounts: frozenset[str], reducing: bool) -> str | None:
    """With an allowlist ([risk] accounts), another account is refused - unless the order only
    reduces a position that account holds (one taken off the list can still close out)."""
    if accounts and order.account not in accounts and not reducing:
        return reason(Reason.UNKNOWN_ACCOUNT, f"account={order.account} is not in [risk] accounts")
    return None


def check_expiry(inst: Instrument, now: Moment) -> str | None:
    if inst.expiry < now.today or (inst.expiry == now.today and now.minute >= now.close_minute):
        return reason(Reason.INSTRUMENT_EXPIRED, f"expiry={inst.expiry.isoformat()}")
    return None


def check_lot(order: Order, inst: Instrument) -> str | None:
    if order.quantity % inst.lot_size:
        return reason(Reason.QTY_NOT_LOT_MULTIPLE, f"qty={order.quantity} lot={inst.lot_size}")
    return None


def check_tick(order: Order, inst: Instrument) -> str | None:
    if order.price is None:
        return None
    paise = price_paise(order.price)
    if paise is None or paise % inst.tick_paise:
        return reason(Reason.PRICE_NOT_TICK_MULTIPLE, f"price={order.price} tick={inst.tick_paise / 100:.2f}")
    return None


def check_market_hours(now: Moment, risk: RiskSection) -> str | None:
    if risk.enforce_market_hours and not now.market_open:
        day = "weekend" if now.weekend else "holiday" if now.holiday else ""
        hours = f"{risk.market_open}-{risk.market_close}"
        return reason(Reason.MARKET_CLOSED, f"now={now.hhmm} hours={hours} {day}".rstrip())
    return None


def check_halt(book: Book, reducing: bool) -> str | None:
    if book.halted and not reducing:
        return reason(Reason.TRADING_HALTED, book.halt_reason)
    return None


def check_rate(order: Order, book: Book, now: Moment, risk: RiskSection) -> str | None:
    if not book.take_rate_slot(order.account, now.ns, risk.max_orders_per_second):
        return reason(Reason.ORDER_RATE, f"account={order.account} limit={risk.max_orders_per_second}/s")
    return None


def validate(order: Order, inst: Instrument | None, book: Book, now: Moment, risk: RiskSection,
             reducing: bool, accounts: frozenset[str] = frozenset()) -> str | None:
    """The first validation failure, or None. The rate slot is taken only by an order that got there."""
    bad = check_shape(order) or check_account(order, accounts, reducing)
    if bad:
        return bad
    if inst is None:
        return reason(Reason.UNKNOWN_SYMBOL, order.symbol[:64])
    return (check_expiry(inst, now) or check_lot(order, inst) or check_tick(order, inst)
            or check_market_hours(now, risk) or check_halt(book, reducing)
            or check_rate(order, book, now, risk))
