"""Crash recovery: settle every intent left pending, by asking the broker - never by resending blindly.

For each pending intent (committed before the broker was called, no decision recorded):
- the broker knows none of its orders -> it never reached the broker: the intent is dropped, and the
  order, which was never answered, is judged afresh when its source redelivers it;
- the broker knows all of them -> the decision is settled from the broker's own record;
- the broker knows some slices of a sliced order -> the slices it confirms it never received are sent
  now (the lookup made that safe), then the order is settled.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.risk.context import Moment
from engine.settle import record_book_changes, settle
from engine.store.base import CommitBatch, Intent

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger("wojak.reconcile")


def reconcile(engine: "Engine", into: CommitBatch | None = None) -> tuple[list[tuple], list[Intent]]:
    """Settle all pending intents; raises BrokerError if the broker cannot answer (retried later).

    into: the running batch to add the outcome to (in service: it commits, in order, with that batch);
    None at start-up, where it is committed here. Returns the decisions made and the intents dropped."""
    # Intents whose decisions are made but still on their way to the store are not pending.
    intents = [i for i in engine.store.pending_intents() if i.client_order_id not in engine.inflight]
    summary = {"pending": len(intents), "settled": 0, "dropped": 0, "completed_slices": 0}
    if not intents:
        engine.needs_reconcile = False
        return [], []
    known = engine.broker.lookup([bo.client_order_id for i in intents for bo in i.broker_orders])
    missing = [bo for i in intents if any(b.client_order_id in known for b in i.broker_orders)
               for bo in i.broker_orders if bo.client_order_id not in known]
    if missing:
        known.update({r.client_order_id: r for r in engine.broker.submit(missing)})
        summary["completed_slices"] = len(missing)

    now = Moment.at(engine.clock, engine.cfg.risk).ns
    batch = CommitBatch() if into is None else into
    first = len(batch.decisions)
    dropped: list[Intent] = []
    touched: set[tuple[str, str]] = set()
    for intent in intents:
        if not any(bo.client_order_id in known for bo in intent.broker_orders):
            batch.dropped_intents.append(intent.client_order_id)
            dropped.append(intent)
            batch.anomalies.append(("intent_dropped", intent.client_order_id,
                                    "broker never received it; judged afresh on redelivery", now))
            summary["dropped"] += 1
            continue
        d = settle(intent.order, intent.broker_orders, known, engine.book, now, batch.trades, touched)
        batch.decisions.append((d, intent.content_hash, intent.order))
        summary["settled"] += 1
    record_book_changes(engine.book, touched, batch)
    if into is None:
        engine.store.commit(batch)
    engine.needs_reconcile = False
    log.warning("reconciled pending intents: %s", summary)
    return batch.decisions[first:], dropped
