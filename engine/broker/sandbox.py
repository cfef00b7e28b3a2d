"""The sandbox broker: fills or fails at random, deterministically per (seed, client_order_id).

It keeps its own journal in a separate SQLite file, as an exchange keeps its own order book:
after an engine crash, reconciliation asks it what happened to each pending id. Every submit of an
id is counted (`calls`), so tests can prove that no id was ever sent twice.
"""
from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Sequence

from engine.broker.base import BrokerOrder, BrokerResult
from engine.models import Reason, reason

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
  client_order_id TEXT PRIMARY KEY, status TEXT NOT NULL, fill_price REAL, trade_id TEXT,
  reason TEXT, ts INTEGER NOT NULL,
  calls INTEGER NOT NULL DEFAULT 1    -- every submit of this id, the first included
) WITHOUT ROWID;
"""


class SandboxBroker:
    def __init__(self, journal: str | Path, fill_probability: float = 0.95, seed: int = 7,
                 latency_ms: float = 0.0) -> None:
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(journal), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # OFF: every commit is written to the OS before submit returns, so the journal survives any
        # crash of this process (what the crash tests exercise) but not a power cut. A simulated
        # exchange need not be more durable than that, and it keeps fsyncs (a WAL checkpoint's
        # included) off the engine's hot path. The engine's own store stays FULL.
        self.db.execute("PRAGMA synchronous=OFF")
        # Its WAL checkpoints run in the engine's loop: small and often (a ~0.4 MB copy every few
        # batches) rather than the default 1000 pages, a stall of milliseconds every hundred batches.
        self.db.execute("PRAGMA wal_autocheckpoint=100")
        self.db.executescript(_SCHEMA)
        self.fill_probability = fill_probability
        self.seed = seed
        self.latency_s = latency_ms / 1000.0
        # 2**64 scale: a fill when the id's hash lands under the probability.
        self._threshold = int(fill_probability * 2**64)

    def _outcome(self, order: BrokerOrder, trade_seq: str) -> BrokerResult:
        h = hashlib.blake2b(f"{self.seed}:{order.client_order_id}".encode(), digest_size=8).digest()
        if int.from_bytes(h, "big") < self._threshold:
            return BrokerResult(order.client_order_id, "FILLED", order.price, trade_seq)
        return BrokerResult(order.client_order_id, "FAILED",
                            reason=reason(Reason.BROKER_REJECTED, "sandbox: simulated exchange rejection"))

    def submit(self, orders: Sequence[BrokerOrder]) -> list[BrokerResult]:
        if not orders:
            return []
        if self.latency_s:
            time.sleep(self.latency_s)  # one round trip per batch: a real gateway pipelines sends
        now = time.time_ns()
        # Trade ids ascend like an exchange's: cheap to index, and they sort by time.
        results = [self._outcome(o, f"T{now:x}{n:04x}") for n, o in enumerate(orders)]
        rows = [(r.client_order_id, r.status, r.fill_price, r.trade_id, r.reason, now) for r in results]
        db = self.db
        db.execute("BEGIN")
        inserted: set[str] = set()
        for i in range(0, len(rows), 500):
            chunk = rows[i:i + 500]
            sql = ("INSERT OR IGNORE INTO executions VALUES " + ",".join(["(?,?,?,?,?,?,1)"] * len(chunk))
                   + " RETURNING client_order_id")
            inserted.update(c for (c,) in db.execute(sql, [v for row in chunk for v in row]))
        if len(inserted) < len(rows):
            # Ids seen before (a resend): the idempotency key at work. They are answered from the
            # journal, as first executed, and counted.
            repeats = [r.client_order_id for r in results if r.client_order_id not in inserted]
            known = self.lookup(repeats)
            db.executemany("UPDATE executions SET calls = calls + 1 WHERE client_order_id = ?", [(c,) for c in repeats])
            results = [known.get(r.client_order_id, r) for r in results]
        db.execute("COMMIT")
        return results

    def lookup(self, client_order_ids: Sequence[str]) -> dict[str, BrokerResult]:
        out: dict[str, BrokerResult] = {}
        ids = list(client_order_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            q = ("SELECT client_order_id, status, fill_price, trade_id, reason FROM executions "
                 f"WHERE client_order_id IN ({','.join('?' * len(chunk))})")
            for row in self.db.execute(q, chunk):
                out[row[0]] = BrokerResult(*row)
        return out

    def call_counts(self) -> dict[str, int]:
        """How many times each id was submitted (for tests and audits)."""
        return dict(self.db.execute("SELECT client_order_id, calls FROM executions"))

    def close(self) -> None:
        self.db.close()
