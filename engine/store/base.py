"""Step 4: the store interface. Every backend (SQLite embedded, Couchbase in production) passes the
same contract suite (tests/engine/test_store_contract.py).

Two writes carry the invariants:
- `commit_intents`: orders about to be sent, committed *before* the broker is called;
- `commit`: one atomic batch of decisions, trades, positions, day P&L, ticks, escalations (the
  outbox), settings, source checkpoints and dropped intents, committed *before* any answer leaves
  the engine. An intent is resolved once its order's decision is committed: `pending_intents` and
  `counts()["pending"]` never include it, whenever the backend physically forgets it.

The engine calls `commit_intents` itself and may hand `commit` to a store writer process
(engine/store/writer.py), so the two must not wait on each other's locks.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import msgspec

from engine.broker.base import BrokerOrder
from engine.models import Decision, Escalation, Tick, Trade


class Intent(msgspec.Struct):
    """An order the gate passed, recorded before the broker sees it (PENDING until decided)."""

    client_order_id: str
    content_hash: str
    order: dict
    broker_orders: list[BrokerOrder]
    ts: int


class Known(msgspec.Struct):
    """What the store knows of a client_order_id: its content hash, and its decision unless pending."""

    content_hash: str
    decision: Decision | None


class PositionRow(msgspec.Struct):
    account: str
    symbol: str
    net_qty: int
    avg_price: float
    realised_pnl: float


class OutboxItem(msgspec.Struct):
    escalation: Escalation
    attempts: int


class EscalationState(msgspec.Struct):
    """An escalation and how its delivery to the risk-management system stands."""

    escalation: Escalation
    attempts: int
    delivered_ns: int | None = None
    last_error: str | None = None


class CommitBatch(msgspec.Struct):
    decisions: list[tuple[Decision, str, dict | None]] = []  # (decision, content hash, order as sent)
    trades: list[Trade] = []
    positions: list[PositionRow] = []
    day_pnl: list[tuple[str, str, float]] = []  # (account, ISO day, realised that day)
    ticks: list[Tick] = []
    escalations: list[Escalation] = []
    settings: dict[str, str] = {}
    dropped_intents: list[str] = []  # reconciled: the broker never received them
    checkpoints: dict[str, str] = {}  # source positions (e.g. a Kinesis shard's sequence number)
    anomalies: list[tuple[str, str, str, int]] = []  # (kind, client_order_id, detail, ts)

    def empty(self) -> bool:
        return not (self.decisions or self.trades or self.positions or self.day_pnl or self.ticks
                    or self.escalations or self.settings or self.dropped_intents or self.anomalies
                    or self.checkpoints)

    def extend(self, other: "CommitBatch") -> None:
        """Append a later batch: one transaction for both, applied in order (later rows win)."""
        for name in ("decisions", "trades", "positions", "day_pnl", "ticks", "escalations", "dropped_intents",
                     "anomalies"):
            getattr(self, name).extend(getattr(other, name))
        self.settings.update(other.settings)
        self.checkpoints.update(other.checkpoints)


# A batch as the engine hands it to the store writer, and as the batch journal keeps it:
# msgpack (the engine's batch number, CommitBatch).
_dec_frame = msgspec.msgpack.Decoder(tuple[int, CommitBatch])


def merge_frames(frames: Sequence[bytes]) -> CommitBatch:
    """Batch frames as one batch, in order."""
    batch = _dec_frame.decode(frames[0])[1]
    for frame in frames[1:]:
        batch.extend(_dec_frame.decode(frame)[1])
    return batch


class Store(Protocol):
    # hot path
    def lookup(self, client_order_ids: Sequence[str]) -> dict[str, Known]: ...
    def commit_intents(self, intents: Sequence[Intent], resolved: Sequence[str] = ()) -> None:
        """resolved: ids whose decisions are committed since the last call; a backend that keeps
        intents apart from decisions may forget those intents now (in the same write)."""
    def commit(self, batch: CommitBatch) -> None: ...

    # start-up and reconciliation
    def pending_intents(self) -> list[Intent]: ...
    def positions(self, account: str | None = None) -> list[PositionRow]: ...
    def last_prices(self) -> dict[str, tuple[float, int]]: ...  # symbol -> (ltp, ts of that tick)
    def day_pnl(self, day: str) -> dict[str, float]: ...
    def settings(self) -> dict[str, str]: ...

    # queries
    def get_decision(self, client_order_id: str) -> Decision | None: ...
    # the latest `limit`, oldest first
    def decisions(self, account: str | None = None, limit: int = 1000) -> list[Decision]: ...
    def trades(self, client_order_id: str | None = None) -> list[Trade]: ...  # an order's: its slices' too
    def ticks(self, symbol: str, limit: int = 100) -> list[Tick]: ...
    def anomalies(self) -> list[tuple[str, str, str, int]]: ...
    def counts(self) -> dict[str, int]: ...

    # escalation outbox
    def escalations(self, limit: int = 100) -> list[EscalationState]: ...  # the latest, oldest first
    def outbox_due(self, now_ns: int, limit: int = 100) -> list[OutboxItem]: ...
    def outbox_delivered(self, escalation_ids: Sequence[str], now_ns: int) -> None: ...
    def outbox_retry(self, escalation_id: str, next_ns: int, error: str) -> None: ...

    # source checkpoints (e.g. Kinesis sequence numbers per shard)
    def get_checkpoint(self, key: str) -> str | None: ...
    def set_checkpoint(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...
