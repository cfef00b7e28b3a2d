"""The pre-trade gate: validate, then check limits; one place turns checks into a verdict.

    verdict = gate.evaluate(order, moment)
      REJECTED   first validation failure (one reason)
      ESCALATED  every breached limit (all reasons) -> the full risk-management system
      SEND       to the broker, as one order or as exchange-legal slices

A SEND verdict marks the order pending in the book, so later orders of the same batch see it.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.config import RiskSection
from engine.instruments import Instrument
from engine.models import Order, Status
from engine.risk.book import Book
from engine.risk.context import Moment
from engine.risk.limits import check_limits, is_reducing, slices
from engine.risk.validate import validate

SEND = "SEND"


@dataclass(slots=True)
class Verdict:
    status: str  # REJECTED | ESCALATED | SEND
    reasons: list[str]
    price: float | None = None  # limit price, or the last tick for a market order
    child_qtys: list[int] | None = None  # slices when the order is above the freeze quantity


class Gate:
    def __init__(self, instruments: dict[str, Instrument], book: Book, risk: RiskSection) -> None:
        self.instruments = instruments
        self.book = book
        self.risk = risk
        self.accounts = frozenset(risk.accounts)  # [] = any account

    def evaluate(self, order: Order, now: Moment) -> Verdict:
        book = self.book
        inst = self.instruments.get(order.symbol)
        signed = order.signed_qty()
        net = book.net(order.account, order.symbol)
        reducing = is_reducing(net, signed)
        bad = validate(order, inst, book, now, self.risk, reducing, self.accounts)
        if bad:
            return Verdict(Status.REJECTED.value, [bad])
        breaches, price = check_limits(order, inst, book, now, self.risk, net, reducing)
        if breaches:
            return Verdict(Status.ESCALATED.value, breaches, price)
        book.add_pending(order.account, order.symbol, signed, price)
        child_qtys = None
        if order.quantity > inst.max_order_qty:  # only reachable with freeze_qty_policy = "slice"
            child_qtys = slices(order.quantity, inst.max_order_qty)
        return Verdict(SEND, [], price, child_qtys)
