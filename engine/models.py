"""The engine's vocabulary: orders, ticks, decisions, positions and the reason codes.

Everything that crosses a process boundary is a msgspec Struct, so the schema *is* the validator:
decoding an order checks its types, ranges and patterns in one pass, in C.
"""
from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec

# client_order_id: 1-64 of A-Za-z0-9._:- (safe as a key in SQLite, Couchbase and every source).
OrderId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# A quantity is in units (contracts x lot size), as NSE and every Indian broker API count it.
Quantity = Annotated[int, msgspec.Meta(gt=0, le=10_000_000)]
Price = Annotated[float, msgspec.Meta(gt=0, le=100_000_000)]


class Status(str, enum.Enum):
    FILLED = "FILLED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    ESCALATED = "ESCALATED"
    ACCEPTED = "ACCEPTED"  # a tick or a control request, recorded


class Reason(str, enum.Enum):
    """Machine codes. A reason string is `CODE` or `CODE: context numbers`."""

    # validation -> REJECTED
    SCHEMA = "SCHEMA"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    INSTRUMENT_EXPIRED = "INSTRUMENT_EXPIRED"
    QTY_NOT_LOT_MULTIPLE = "QTY_NOT_LOT_MULTIPLE"
    PRICE_NOT_TICK_MULTIPLE = "PRICE_NOT_TICK_MULTIPLE"
    MARKET_CLOSED = "MARKET_CLOSED"
    TRADING_HALTED = "TRADING_HALTED"
    ORDER_RATE = "ORDER_RATE"
    DUPLICATE_ID_MISMATCH = "DUPLICATE_ID_MISMATCH"
    # risk limits -> ESCALATED
    QTY_ABOVE_FREEZE = "QTY_ABOVE_FREEZE"
    MAX_ORDER_LOTS = "MAX_ORDER_LOTS"
    MAX_NOTIONAL = "MAX_NOTIONAL"
    PRICE_BAND = "PRICE_BAND"
    NO_REFERENCE_PRICE = "NO_REFERENCE_PRICE"
    MAX_POSITION = "MAX_POSITION"
    MAX_GROSS_EXPOSURE = "MAX_GROSS_EXPOSURE"
    DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
    EXPIRY_DAY_SHORT_OPTION = "EXPIRY_DAY_SHORT_OPTION"
    # execution -> FAILED
    BROKER_REJECTED = "BROKER_REJECTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"


def reason(code: Reason, context: str = "") -> str:
    return f"{code.value}: {context}" if context else code.value


def reason_code(text: str) -> str:
    """The machine code of a reason string (`PRICE_BAND: limit=... ` -> `PRICE_BAND`)."""
    return text.split(":", 1)[0]


class Order(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    client_order_id: OrderId
    symbol: Symbol
    side: Literal["BUY", "SELL"]
    quantity: Quantity
    order_type: Literal["LIMIT", "MARKET"] = "LIMIT"
    price: Price | None = None
    product: Literal["NRML", "MIS"] = "NRML"
    account: Name = "default"
    strategy: Name | None = None
    # SEBI retail-algo framework: every API order carries the exchange-issued algo ID.
    algo_id: Name | None = None
    # Sources may tag a message as an order explicitly; ticks carry kind="tick".
    kind: Literal["order"] = "order"

    def signed_qty(self) -> int:
        return self.quantity if self.side == "BUY" else -self.quantity


class Tick(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    symbol: Symbol
    ltp: Price
    ts: Annotated[int, msgspec.Meta(ge=0)] | None = None  # ns since epoch; engine clock when absent
    kind: Literal["tick"] = "tick"


class Child(msgspec.Struct, omit_defaults=True):
    """One exchange-legal slice of a parent order (freeze_qty_policy = "slice")."""

    client_order_id: str
    quantity: int
    status: str
    fill_price: float | None = None
    trade_id: str | None = None
    reason: str | None = None


class Decision(msgspec.Struct, omit_defaults=True):
    client_order_id: str
    status: str
    reasons: list[str] = []
    duplicate: bool = False
    fill_price: float | None = None
    trade_id: str | None = None
    filled_qty: int = 0
    account: str | None = None
    symbol: str | None = None
    side: str | None = None
    quantity: int | None = None
    escalation_id: str | None = None
    children: list[Child] = []
    ts: int = 0  # ns since epoch when decided


class Position(msgspec.Struct):
    account: str
    symbol: str
    net_qty: int = 0
    avg_price: float = 0.0
    realised_pnl: float = 0.0
    ltp: float | None = None
    unrealised_pnl: float = 0.0


def unrealised_pnl(ltp: float | None, avg_price: float, net_qty: int) -> float:
    """An open position's P&L at the last price, in rupees to the paisa (0 when flat or not ticked)."""
    return round((ltp - avg_price) * net_qty, 2) if ltp and net_qty else 0.0


class Trade(msgspec.Struct):
    trade_id: str
    client_order_id: str
    account: str
    symbol: str
    side: str
    quantity: int
    price: float
    ts: int


class Escalation(msgspec.Struct):
    """What the full risk-management system receives for an order this gate would not send."""

    escalation_id: str
    client_order_id: str
    account: str
    reasons: list[str]
    order: dict
    ts: int
