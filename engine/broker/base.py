"""The broker interface: submit orders keyed by client_order_id, and look them up after a crash.

A broker must treat `client_order_id` as an idempotency key (Indian broker APIs accept a client tag
for this; exchanges keep a per-member order ref): submitting a known id returns the first result and
never executes twice. `lookup` is what reconciliation asks after an engine crash.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import msgspec


class BrokerOrder(msgspec.Struct):
    client_order_id: str
    account: str
    symbol: str
    side: str
    quantity: int
    order_type: str
    price: float  # limit price, or the reference (last tick) price for a market order


class BrokerResult(msgspec.Struct):
    client_order_id: str
    status: str  # FILLED | FAILED
    fill_price: float | None = None
    trade_id: str | None = None
    reason: str | None = None


class BrokerError(RuntimeError):
    """The broker could not be reached or did not answer: the outcome is unknown."""


class Broker(Protocol):
    def submit(self, orders: Sequence[BrokerOrder]) -> list[BrokerResult]:
        """Execute each order (once per client_order_id, ever) and answer in the same order."""
        ...

    def lookup(self, client_order_ids: Sequence[str]) -> dict[str, BrokerResult]:
        """Results for the ids the broker has seen; an id it never received is absent."""
        ...

    def close(self) -> None: ...
