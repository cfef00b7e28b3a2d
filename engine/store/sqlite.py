"""The embedded store: SQLite in WAL mode, behind the store contract, and where a batch is durable.

Durability of a batch (what an answer waits for) comes in two ways, both a group commit of the
whole batch with one sync:
- `[store] writer = "process"` (the default): the store writer process appends the batch to the
  batch journal (batch_journal.py) and `fdatasync`s it - as durable as a commit at
  synchronous=FULL - then applies it to these tables, which run at synchronous=NORMAL: their
  checkpoints sync them, and the journal keeps every batch until a checkpoint has synced it.
- `[store] writer = "inline"`: the engine commits each batch here itself, one transaction at
  synchronous=FULL.

The small keyed tables (positions, day P&L, last prices, settings, checkpoints) are WITHOUT ROWID:
one b-tree each. `orders` is a rowid table with a key index (its comment says why), and trades,
ticks and position changes go through append-only logs folded in bulk (below): a commit writes
every page it touches, so pages per batch is what the tables cost. Decisions are stored as msgpack
next to the columns that are queried, so reading one back is one decode.

Intents are not in SQLite: they go to an intent log of their own (`<name>-intents/`, see
intent_log.py), which the engine writes before each broker call while the store writer process
commits decisions here - so neither waits on the other, and an intent costs one fdatasync and no
page writes. An intent is resolved once its decision is committed (or reconciliation dropped it):
reads leave out intents whose decisions are in `orders`, and the engine forgets them with its next
`commit_intents` once their decisions are in the batch journal (they reach `orders` at the latest
when the store is next opened).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

import msgspec

from engine.models import Decision, Escalation, Tick, Trade
from engine.store.base import CommitBatch, EscalationState, Intent, Known, OutboxItem, PositionRow, merge_frames
from engine.store.batch_journal import JournalReader, JournalWriter, legacy_journal_path
from engine.store.intent_log import IntentLog

_SCHEMA = """
-- Decided orders: one row each, written once. A rowid table: rows append at the end, and only the
-- small key index takes inserts where the ids of several strategies interleave (measured: a
-- WITHOUT ROWID table keyed by id wrote a quarter more pages per commit).
CREATE TABLE IF NOT EXISTS orders (
  client_order_id TEXT PRIMARY KEY,
  content_hash TEXT NOT NULL,
  account TEXT, symbol TEXT, status TEXT,
  ts INTEGER NOT NULL,
  order_json BLOB,                -- the order as received (msgpack)
  decision BLOB NOT NULL          -- msgpack Decision
);
CREATE TABLE IF NOT EXISTS trades (
  trade_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL, account TEXT NOT NULL, symbol TEXT NOT NULL,
  side TEXT NOT NULL, quantity INTEGER NOT NULL, price REAL NOT NULL, ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS trades_order ON trades(client_order_id);
-- Trades not yet folded into `trades`, appended (see position_log below for why logs): inserted
-- into `trades` one commit at a time, each trade touched a leaf of the order-id index where the
-- ids of several strategies interleave (measured: that index alone wrote ~1 KB per order, a fifth
-- of what the tables wrote in the benchmark). Trade ids ascend as an exchange's do, so the log's own
-- key appends; the trigger keeps a trade id unique across the log and the folded table.
CREATE TABLE IF NOT EXISTS trade_log (
  trade_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL, account TEXT NOT NULL, symbol TEXT NOT NULL,
  side TEXT NOT NULL, quantity INTEGER NOT NULL, price REAL NOT NULL, ts INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS trade_log_unique BEFORE INSERT ON trade_log
  WHEN EXISTS (SELECT 1 FROM trades WHERE trade_id = NEW.trade_id)
  BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: trades.trade_id'); END;
CREATE TABLE IF NOT EXISTS positions (
  account TEXT NOT NULL, symbol TEXT NOT NULL, net_qty INTEGER NOT NULL, avg_price REAL NOT NULL,
  realised_pnl REAL NOT NULL, PRIMARY KEY (account, symbol)) WITHOUT ROWID;
-- Position changes not yet folded into `positions`, appended: one tail page per commit, where an
-- upsert into `positions` touches a page per (account, symbol) - with many accounts, a random page
-- per order (measured: positions were ~30% of the pages the tables wrote). A change row holds the
-- whole new state, so the latest row of a key is its position; folds copy them over in bulk.
CREATE TABLE IF NOT EXISTS position_log (
  account TEXT NOT NULL, symbol TEXT NOT NULL, net_qty INTEGER NOT NULL, avg_price REAL NOT NULL,
  realised_pnl REAL NOT NULL);
CREATE TABLE IF NOT EXISTS day_pnl (
  account TEXT NOT NULL, day TEXT NOT NULL, realised REAL NOT NULL, PRIMARY KEY (account, day)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ticks (symbol TEXT NOT NULL, ltp REAL NOT NULL, ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ticks_symbol ON ticks(symbol, ts);
-- Ticks not yet folded into `ticks`, appended: put in `ticks` directly, each tick touched a random
-- leaf of its (symbol, ts) index, a page written per tick per commit (measured: ~13 KB written per
-- tick, 8% of what the tables wrote in the benchmark). A fold inserts them sorted, each leaf once.
CREATE TABLE IF NOT EXISTS tick_log (symbol TEXT NOT NULL, ltp REAL NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS last_prices (symbol TEXT PRIMARY KEY, ltp REAL NOT NULL, ts INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
  escalation_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL, payload BLOB NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_ns INTEGER NOT NULL, delivered_ns INTEGER, last_error TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_ns) WHERE delivered_ns IS NULL;
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anomalies (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, client_order_id TEXT NOT NULL,
  detail TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- How far the tables have applied the batch journal (batch_journal.py), written with those rows.
CREATE TABLE IF NOT EXISTS materialized (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
"""

_enc = msgspec.msgpack.Encoder()
_dec_decision = msgspec.msgpack.Decoder(Decision)
_dec_escalation = msgspec.msgpack.Decoder(Escalation)

# Rows a log holds before it is folded. A fold is a transaction of its own whose pages reach the
# disk at the next checkpoint: a burst that the engine's syncs wait behind. Positions: a fold
# rewrites most pages of `positions` however few changes it carries (the benchmark has ~57,000
# (account, symbol) keys), so few large folds (5,000 to 60,000 measured: 20,000 best). Trades and
# ticks go in at a few places of their indexes each: a fold of 2,000 writes nearly as few pages
# per row as one of 20,000, and folds of 20,000 trades measured p99 ~1 ms worse (their bursts).
FOLD_ROWS = {"position_log": 20_000, "trade_log": 2_000, "tick_log": 2_000}

# Each log's fold: its rows into the indexed table, in that table's key order (so a page of it is
# written once per fold, not once per commit). Position changes: the latest row of a key wins.
_FOLDS = {
    "position_log": "INSERT INTO positions SELECT account, symbol, net_qty, avg_price, realised_pnl FROM position_log"
                    " WHERE true ORDER BY rowid ON CONFLICT(account, symbol) DO UPDATE SET net_qty=excluded.net_qty,"
                    " avg_price=excluded.avg_price, realised_pnl=excluded.realised_pnl",
    "trade_log": "INSERT INTO trades SELECT * FROM trade_log ORDER BY client_order_id, trade_id",
    "tick_log": "INSERT INTO ticks SELECT symbol, ltp, ts FROM tick_log ORDER BY symbol, ts, rowid",
}
_CHUNK = 500  # stays far below SQLite's bound-parameter limit


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


class SqliteStore:
    """role: "reader" (the default: CLI, tests, tools) applies journaled batches before every read;
    "engine" applies them once, at open (the engine reads what it has not yet seen from memory);
    "background" (the engine's outbox process) never applies them, and commits at
    synchronous=NORMAL: all it writes is delivery marks and retry times, and one lost to a power cut
    means an escalation delivered again (at least once, as always) - not an fsync beside the
    engine's for every round; "writer" (the store writer process) applies them as its job, with the
    tables at synchronous=NORMAL (the journal is synced on every append)."""

    def __init__(self, path: str | Path, role: str = "reader") -> None:
        if role not in ("reader", "engine", "background", "writer"):
            raise ValueError(f"unknown SqliteStore role {role!r}")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self.role = role
        self.db = sqlite3.connect(str(p), isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'NORMAL' if role in ('writer', 'background') else 'FULL'}")
        self.db.execute("PRAGMA busy_timeout=30000")
        # A checkpoint copies the WAL into the database file and fsyncs it: on the hot path that is a
        # latency spike every few thousand orders. The engine and its writer run their own, off the
        # answer path, and turn automatic checkpoints off.
        self.db.execute(f"PRAGMA wal_autocheckpoint={4096 if role == 'reader' else 0}")
        self.db.execute("PRAGMA cache_size=-65536")
        self.db.executescript(_SCHEMA)
        self.journal = JournalReader(p)
        # rows in each log, not yet folded (counted from the file: another process may have logged them)
        self.logged = {log: self.db.execute(f"SELECT COUNT(*) FROM {log}").fetchone()[0] for log in _FOLDS}
        self._apply_legacy_journal()
        if role in ("reader", "engine"):
            self.materialize()
        # The store writer process commits batches only: it never opens the intent log.
        self.log = IntentLog(p.with_name(f"{p.stem}-intents")) if role in ("reader", "engine") else None
        if self.log is not None:
            self.log.resolve(self._decided(list(self.log.pending)))

    # -- the batch journal (see batch_journal.py) ----------------------------------------------
    def journal_writer(self) -> JournalWriter:
        return JournalWriter(self.path, after=self._materialized(self.db))

    def materialize(self, held: Sequence[tuple[int, bytes]] = ()) -> int:
        """Apply journaled batches the tables lack; the last seq applied. `held`: (journal seq,
        frame) pairs the caller journaled itself (the writer), in order: applied without reading
        them back when they follow on from what the tables hold."""
        if not held and not self.journal.exists():
            return self._materialized(self.db)
        with self._tx() as db:
            done = self._materialized(db)
            rows = [r for r in held if r[0] > done]
            if not held or (rows and rows[0][0] != done + 1):  # not held, or a gap: read the journal
                rows = self.journal.after(done)
            done = self._apply_journaled(db, rows) or done
        return done

    def _apply_journaled(self, db: sqlite3.Connection, rows: Sequence[tuple[int, bytes]]) -> int:
        """(seq, frame) rows applied and marked materialized, in the caller's transaction; the last
        seq (0 if none)."""
        if not rows:
            return 0
        self._apply(db, merge_frames([b for _, b in rows]))
        db.execute("INSERT OR REPLACE INTO materialized VALUES (1, ?)", (rows[-1][0],))
        return rows[-1][0]

    @staticmethod
    def _materialized(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT seq FROM materialized").fetchone()
        return row[0] if row else 0

    def _fresh(self) -> None:
        """A reader's query sees every batch the engine answered: apply what the journal holds beyond."""
        if self.role == "reader" and self.journal.exists() and self.journal.last() > self._materialized(self.db):
            self.materialize()

    def _apply_legacy_journal(self) -> None:
        """Batches still in a journal of the SQLite-file kind (before batch_journal.py) are applied
        first, so none answered is lost across the upgrade; the engine then removes that file."""
        legacy = legacy_journal_path(self.path)
        if not legacy.exists():
            return
        old = sqlite3.connect(f"file:{legacy}?mode=ro", uri=True, timeout=30)
        try:
            with self._tx() as db:
                done = self._materialized(db)
                self._apply_journaled(db, old.execute("SELECT seq, batch FROM journal WHERE seq > ? ORDER BY seq",
                                                      (done,)).fetchall())
        finally:
            old.close()
        if self.role == "engine":  # the store's owner (it holds the store lock)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{legacy}{suffix}").unlink(missing_ok=True)

    # -- hot path -----------------------------------------------------------------------------
    def lookup(self, client_order_ids: Sequence[str]) -> dict[str, Known]:
        out: dict[str, Known] = {}
        ids = list(dict.fromkeys(client_order_ids))
        for chunk in _chunks(ids):
            q = (f"SELECT client_order_id, content_hash, decision FROM orders "
                 f"WHERE client_order_id IN ({','.join('?' * len(chunk))})")
            for coid, h, blob in self.db.execute(q, chunk):
                out[coid] = Known(h, _dec_decision.decode(blob))
        pending = self._log().pending
        if pending:
            for coid in ids:  # decided first: a resolved intent is no news
                i = pending.get(coid)
                if i is not None and coid not in out:
                    out[coid] = Known(i.content_hash, None)
        return out

    def commit_intents(self, intents: Sequence[Intent], resolved: Sequence[str] = ()) -> None:
        self._log().append(intents, resolved)

    def _log(self) -> IntentLog:
        if self.log is None:
            raise RuntimeError("this SqliteStore was opened without its intent log (the store writer's)")
        return self.log

    def commit(self, b: CommitBatch) -> None:
        if b.empty():
            return
        with self._tx() as db:
            self._apply(db, b)
        self.fold_logs()  # committing in line (no writer process): fold here
        if b.dropped_intents and self.log is not None:  # (the writer process: the engine forgets them)
            self.log.resolve(b.dropped_intents, durably=True)

    def _apply(self, db: sqlite3.Connection, b: CommitBatch) -> None:
        """A batch's rows, inside the caller's transaction."""
        if b.decisions:
            db.executemany(
                "INSERT INTO orders(client_order_id, content_hash, account, symbol, status, ts, order_json,"
                " decision) VALUES (?,?,?,?,?,?,?,?)",
                [(d.client_order_id, h, d.account, d.symbol, d.status, d.ts,
                  _enc.encode(o) if o is not None else None, _enc.encode(d)) for d, h, o in b.decisions])
        logged = self.logged
        if b.trades:
            db.executemany("INSERT INTO trade_log VALUES (?,?,?,?,?,?,?,?)",
                           [(t.trade_id, t.client_order_id, t.account, t.symbol, t.side, t.quantity,
                             t.price, t.ts) for t in b.trades])
            logged["trade_log"] += len(b.trades)
        if b.positions:
            db.executemany("INSERT INTO position_log VALUES (?,?,?,?,?)",
                           [(p.account, p.symbol, p.net_qty, p.avg_price, p.realised_pnl) for p in b.positions])
            logged["position_log"] += len(b.positions)
        if b.day_pnl:
            db.executemany("INSERT INTO day_pnl VALUES (?,?,?) ON CONFLICT(account, day) DO UPDATE SET"
                           " realised=excluded.realised", b.day_pnl)
        if b.ticks:
            rows = [(t.symbol, t.ltp, t.ts) for t in b.ticks]
            db.executemany("INSERT INTO tick_log VALUES (?,?,?)", rows)
            logged["tick_log"] += len(rows)
            db.executemany("INSERT INTO last_prices VALUES (?,?,?) ON CONFLICT(symbol) DO UPDATE SET"
                           " ltp=excluded.ltp, ts=excluded.ts WHERE excluded.ts >= last_prices.ts", rows)
        if b.escalations:
            db.executemany("INSERT OR IGNORE INTO outbox(escalation_id, client_order_id, payload, next_ns)"
                           " VALUES (?,?,?,?)",
                           [(e.escalation_id, e.client_order_id, _enc.encode(e), e.ts) for e in b.escalations])
        if b.settings:
            db.executemany("INSERT OR REPLACE INTO settings VALUES (?,?)", list(b.settings.items()))
        if b.anomalies:
            db.executemany("INSERT INTO anomalies(kind, client_order_id, detail, ts) VALUES (?,?,?,?)",
                           b.anomalies)
        if b.checkpoints:
            db.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?,?)", list(b.checkpoints.items()))

    def _tx(self):
        return _Transaction(self.db)

    def _read(self):
        """One snapshot for several SELECTs (a fold between them would count a change twice or not at all)."""
        return _Transaction(self.db, "BEGIN")

    # -- start-up -----------------------------------------------------------------------------
    def pending_intents(self) -> list[Intent]:
        """Intents without a decision, oldest first (decided ones are forgotten on the way)."""
        self._fresh()
        log = self._log()
        log.resolve(self._decided(list(log.pending)))
        return sorted(log.pending.values(), key=lambda i: i.ts)

    def _decided(self, client_order_ids: list[str]) -> set[str]:
        out: set[str] = set()
        for chunk in _chunks(client_order_ids):
            q = f"SELECT client_order_id FROM orders WHERE client_order_id IN ({','.join('?' * len(chunk))})"
            out.update(c for (c,) in self.db.execute(q, chunk))
        return out

    def positions(self, account: str | None = None) -> list[PositionRow]:
        """The folded positions overlaid with the changes since (the latest change of a key wins)."""
        self._fresh()
        where, args = (" WHERE account = ?", (account,)) if account else ("", ())
        with self._read():
            out = {(r[0], r[1]): r for r in self.db.execute(
                "SELECT account, symbol, net_qty, avg_price, realised_pnl FROM positions" + where, args)}
            out.update(((r[0], r[1]), r) for r in self.db.execute(
                "SELECT account, symbol, net_qty, avg_price, realised_pnl FROM position_log" + where
                + " ORDER BY rowid", args))
        return [PositionRow(*out[k]) for k in sorted(out)]

    def fold_logs(self, everything: bool = False) -> None:
        """Fold each log holding its FOLD_ROWS or more (every log with a row in it: `everything`)."""
        for log, n in self.logged.items():
            if n >= FOLD_ROWS[log] or (everything and n):
                self.fold(log)

    def fold(self, log: str) -> int:
        """Move a log's rows into its indexed table (see _FOLDS) in one transaction; how many."""
        with self._tx() as db:
            db.execute(_FOLDS[log])
            n = db.execute(f"DELETE FROM {log}").rowcount
        self.logged[log] = 0
        return n

    def last_prices(self) -> dict[str, tuple[float, int]]:
        self._fresh()
        return {s: (p, t) for s, p, t in self.db.execute("SELECT symbol, ltp, ts FROM last_prices")}

    def day_pnl(self, day: str) -> dict[str, float]:
        self._fresh()
        return dict(self.db.execute("SELECT account, realised FROM day_pnl WHERE day = ?", (day,)))

    def settings(self) -> dict[str, str]:
        self._fresh()
        return dict(self.db.execute("SELECT key, value FROM settings"))

    # -- queries ------------------------------------------------------------------------------
    def get_decision(self, client_order_id: str) -> Decision | None:
        self._fresh()
        row = self.db.execute("SELECT decision FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        return _dec_decision.decode(row[0]) if row and row[0] is not None else None

    def decisions(self, account: str | None = None, limit: int = 1000) -> list[Decision]:
        self._fresh()
        q = "SELECT decision, ts, client_order_id FROM orders"
        args: tuple = ()
        if account:
            q += " WHERE account = ?"
            args = (account,)
        q = f"SELECT decision FROM ({q} ORDER BY ts DESC, client_order_id DESC LIMIT ?) ORDER BY ts, client_order_id"
        return [_dec_decision.decode(b) for (b,) in self.db.execute(q, args + (limit,))]

    def trades(self, client_order_id: str | None = None) -> list[Trade]:
        self._fresh()
        # The folded trades and the log since, in one statement (one snapshot).
        if client_order_id:  # the order's own trades and those of its slices (`<id>#<n>`: ids never hold '#')
            mine = "client_order_id = ?1 OR (client_order_id >= ?1 || '#' AND client_order_id < ?1 || '$')"
            rows = self.db.execute(f"SELECT * FROM trades WHERE {mine} UNION ALL"
                                   f" SELECT * FROM trade_log WHERE {mine} ORDER BY ts, trade_id",
                                   (client_order_id,))
        else:
            rows = self.db.execute("SELECT * FROM trades UNION ALL SELECT * FROM trade_log ORDER BY ts, trade_id")
        return [Trade(*r) for r in rows]

    def ticks(self, symbol: str, limit: int = 100) -> list[Tick]:
        self._fresh()
        with self._read():  # the folded ticks and the log since, in one snapshot (as positions())
            # Ticks of equal ts, the later first (as the last price has it): folds keep their order in
            # rowids, and all the log holds came after all the table holds.
            folded = self.db.execute("SELECT symbol, ltp, ts, 0, rowid FROM ticks WHERE symbol = ?"
                                     " ORDER BY ts DESC, rowid DESC LIMIT ?", (symbol, limit)).fetchall()
            logged = self.db.execute("SELECT symbol, ltp, ts, 1, rowid FROM tick_log WHERE symbol = ?",
                                     (symbol,)).fetchall()
        rows = sorted(folded + logged, key=lambda r: r[2:], reverse=True)[:limit]
        return [Tick(symbol=r[0], ltp=r[1], ts=r[2]) for r in rows]

    def anomalies(self) -> list[tuple[str, str, str, int]]:
        self._fresh()
        return [tuple(r) for r in self.db.execute("SELECT kind, client_order_id, detail, ts FROM anomalies ORDER BY seq")]

    def counts(self) -> dict[str, int]:
        self._fresh()
        out = {"orders": 0, "pending": 0, "trades": 0, "ticks": 0, "outbox_pending": 0}
        out["pending"] = len(self.pending_intents()) if self.log is not None else 0
        out.update(dict(self.db.execute("SELECT 'orders', COUNT(*) FROM orders UNION ALL "
                                        "SELECT 'trades', (SELECT COUNT(*) FROM trades) + (SELECT COUNT(*) FROM trade_log)"
                                        " UNION ALL "
                                        "SELECT 'ticks', (SELECT COUNT(*) FROM ticks) + (SELECT COUNT(*) FROM tick_log)"
                                        " UNION ALL "
                                        "SELECT 'outbox_pending', COUNT(*) FROM outbox WHERE delivered_ns IS NULL")))
        return out

    # -- escalation outbox --------------------------------------------------------------------
    def escalations(self, limit: int = 100) -> list[EscalationState]:
        self._fresh()
        rows = self.db.execute("SELECT payload, attempts, delivered_ns, last_error FROM outbox"
                               " ORDER BY rowid DESC LIMIT ?", (limit,)).fetchall()  # committed as decided: in time
        return [EscalationState(_dec_escalation.decode(p), a, d, e) for p, a, d, e in reversed(rows)]

    def outbox_due(self, now_ns: int, limit: int = 100) -> list[OutboxItem]:
        self._fresh()
        rows = self.db.execute("SELECT payload, attempts FROM outbox WHERE delivered_ns IS NULL AND next_ns <= ?"
                               " ORDER BY next_ns LIMIT ?", (now_ns, limit))
        return [OutboxItem(_dec_escalation.decode(p), a) for p, a in rows]

    def outbox_delivered(self, escalation_ids: Sequence[str], now_ns: int) -> None:
        with self._tx() as db:
            db.executemany("UPDATE outbox SET delivered_ns = ?, attempts = attempts + 1 WHERE escalation_id = ?",
                           [(now_ns, e) for e in escalation_ids])

    def outbox_retry(self, escalation_id: str, next_ns: int, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, next_ns = ?, last_error = ? WHERE escalation_id = ?",
                       (next_ns, error[:500], escalation_id))

    # -- checkpoints --------------------------------------------------------------------------
    def get_checkpoint(self, key: str) -> str | None:
        self._fresh()
        row = self.db.execute("SELECT value FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_checkpoint(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", (key, value))

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Copy the WAL into the database; PASSIVE never blocks the writer. (busy, wal pages, copied)"""
        return tuple(self.db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone())

    def close(self) -> None:
        self.db.close()
        self.journal.close()
        if self.log is not None:
            self.log.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: a batch lands whole or not at all."""

    def __init__(self, db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self.db = db
        self.begin = begin

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(self.begin)
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
