"""The SQLite store's batch journal: what makes a batch durable when the store writer process runs.

    engine --batch--> writer: journal commit (SQLite, WAL, synchronous=FULL, one row per batch)
                      --> the engine answers
                      writer's materializer thread: journal rows -> tables, many batches per
                      transaction (synchronous=NORMAL: a checkpoint syncs them, and until then the
                      journal still holds every batch)

The journal commit is the group commit on the answer's path: one sequential row and one fsync per
batch, in a file of its own (`<name>-batches.db`), so it never waits on the tables' write lock. The
tables record how far they have applied the journal (`materialized`), in the same transaction as the
rows, so each batch is applied exactly once whoever applies it: the writer's thread; the engine at
start, before it reads anything (after a crash); a reader such as the CLI or a test, before each
query, so what it reads includes every answered batch. Journal rows are deleted once the tables that
hold them are synced (after a checkpoint).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence


SCHEMA = "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, batch BLOB NOT NULL);"

# A journal row is the frame the engine sent (see merge_frames in base.py).


def journal_path(db_path: Path) -> Path:
    return db_path.with_name(f"{db_path.stem}-batches{db_path.suffix}")


def connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA wal_autocheckpoint=0")  # checkpointed by the materializer, off the answer path
    db.executescript(SCHEMA)
    return db


class JournalWriter:
    """The writer process's answer path: append batches, one FULL commit for all of them."""

    def __init__(self, db_path: Path) -> None:
        self.db = connect(journal_path(db_path))
        self._pruned = 0

    def append(self, frames: Sequence[bytes]) -> int:
        """Journal the frames durably; returns the last journal seq."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO journal(batch) VALUES (?)", [(f,) for f in frames])
            last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return last

    def prune(self, through: int) -> None:
        """Delete rows up to `through` (materialized and synced). Not synced itself: the next
        append's FULL commit syncs it (WAL: in order), and should a crash undo it, the rows are
        pruned again - they are materialized already, so nothing reads them twice. Off the answer
        path: the writer prunes after confirming."""
        if through <= self._pruned:
            return
        db = self.db
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("DELETE FROM journal WHERE seq <= ?", (through,))
        finally:
            db.execute("PRAGMA synchronous=FULL")
        self._pruned = through

    def finish_checkpoint(self) -> None:
        """After a background checkpoint: copy the little left, so the next commit restarts the WAL."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def close(self) -> None:
        self.db.close()
