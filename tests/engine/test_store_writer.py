"""The store writer process and the batch journal: a batch is durable once journaled, applied
to the tables exactly once whoever applies it, and never lost between the two - over a real child
process, real ZeroMQ and real SQLite files."""
from __future__ import annotations

import os
import signal
import sqlite3
import time

import msgspec
import pytest

from engine.config import Config, StoreSection
from engine.models import Tick, Trade
from engine.server import lock_store
from engine.store.base import CommitBatch, PositionRow
from engine.store.sqlite import SqliteStore
from engine.store.batch_journal import JournalWriter
from engine.store.writer import StoreWriter, WriterError, _Materializer
from tests.engine.test_store_contract import NOW, decided, escalation, intent

_enc = msgspec.msgpack.Encoder()


def batch(n: int, account: str = "jw") -> CommitBatch:
    coid = f"jw-{n}"
    return CommitBatch(decisions=[decided(coid, account)],
                       trades=[Trade(f"T-{coid}", coid, account, "FUTA", "BUY", 50, 100.0, NOW + n)],
                       positions=[PositionRow(account, "FUTA", 50 * (n + 1), 100.0, 0.0)],
                       ticks=[Tick("FUTA", 100.0 + n, NOW + n)],
                       checkpoints={"shard-0": str(n)})


def wait_for(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_journal_when_appended_then_a_reader_sees_every_batch_applied_once(tmp_path):
    path = tmp_path / "w.db"
    writer_side = SqliteStore(path, role="writer")
    journal = JournalWriter(path, after=0)
    last = journal.append([_enc.encode((n, batch(n))) for n in range(3)])
    assert last == 3
    reader = SqliteStore(path)  # applies what the tables lack before it reads
    assert [t.trade_id for t in reader.trades()] == ["T-jw-0", "T-jw-1", "T-jw-2"]
    assert reader.positions("jw")[0].net_qty == 150  # the last batch's position wins
    assert reader.get_checkpoint("shard-0") == "2"
    # the writer's own materializer finds nothing left to apply: applied once, not twice
    assert writer_side.materialize() == 3
    journal.append([_enc.encode((3, batch(3)))])
    assert writer_side.materialize() == 4
    assert reader.counts()["trades"] == 4 and reader.get_decision("jw-3").status == "FILLED"
    for s in (reader, writer_side):
        s.close()
    journal.close()


def test_journal_when_writer_applies_frames_it_holds_then_each_applied_once_even_after_a_reader(tmp_path):
    path = tmp_path / "w.db"
    writer_side = SqliteStore(path, role="writer")
    journal = JournalWriter(path, after=0)
    frames = [_enc.encode((n, batch(n))) for n in range(4)]
    last = journal.append(frames)
    held = list(zip(range(last - 3, last + 1), frames))
    reader = SqliteStore(path)  # a reader applies all four first
    assert reader.counts()["trades"] == 4
    # the held frames overlap what the tables hold: nothing applied twice
    assert writer_side.materialize(held=held) == 4
    more = [_enc.encode((n, batch(n))) for n in range(4, 6)]
    last = journal.append(more)
    assert writer_side.materialize(held=held + list(zip((last - 1, last), more))) == 6
    assert reader.counts()["trades"] == 6
    # a gap (rows 7 and 8 journaled, only 8 held): what does not follow on is read from the journal
    more = [_enc.encode((n, batch(n))) for n in range(6, 8)]
    last = journal.append(more)
    assert writer_side.materialize(held=[(last, more[1])]) == 8
    assert [t.trade_id for t in reader.trades()][-2:] == ["T-jw-6", "T-jw-7"]
    assert reader.positions("jw")[0].net_qty == 400
    for s in (reader, writer_side):
        s.close()
    journal.close()


def test_journal_when_writer_dies_before_applying_then_engine_start_applies_the_rest(tmp_path):
    path = tmp_path / "w.db"
    journal = JournalWriter(path, after=0)
    journal.append([_enc.encode((n, batch(n))) for n in range(2)])
    journal.close()  # the writer process is gone: journaled, never materialized
    engine_side = SqliteStore(path, role="engine")  # at open, before it reads anything
    assert engine_side.get_decision("jw-1").status == "FILLED"
    assert engine_side.positions("jw")[0].net_qty == 100
    engine_side.close()


def test_store_when_journal_and_intent_log_are_symlinks_to_another_disk_then_they_live_and_recover_there(tmp_path):
    """README: on a machine with two devices the logs go on one of their own by symlinking their
    directories; the store writes, syncs and reads through the links."""
    tables, logs = tmp_path / "tables", tmp_path / "logs"
    tables.mkdir()
    for name in ("w-batches", "w-intents"):
        (logs / name).mkdir(parents=True)
        (tables / name).symlink_to(logs / name, target_is_directory=True)
    path = tables / "w.db"
    engine_side = SqliteStore(path, role="engine")
    engine_side.commit_intents([intent("jw-9", "jw")])
    journal = JournalWriter(path, after=0)
    journal.append([_enc.encode((n, batch(n))) for n in range(2)])
    journal.close()
    engine_side.close()
    assert list((logs / "w-batches").glob("*.log")) and list((logs / "w-intents").glob("*.log"))
    assert (tables / "w-batches").is_symlink() and (tables / "w-intents").is_symlink()  # not replaced
    reopened = SqliteStore(path, role="engine")  # recovers from the linked logs
    assert reopened.get_decision("jw-1").status == "FILLED"
    assert [i.client_order_id for i in reopened.pending_intents()] == ["jw-9"]
    reopened.close()


def test_writer_process_when_batches_submitted_then_done_then_materialized_in_order(tmp_path):
    cfg = StoreSection(path=str(tmp_path / "w.db"))
    w = StoreWriter(cfg)
    try:
        for n in range(1, 6):
            w.submit(n, batch(n))
        assert wait_for(lambda: w.poll_confirmed() == 5), w.confirmed
        assert wait_for(lambda: w.poll_materialized() == 5), w.materialized
    finally:
        w.close()
    assert w.proc.returncode == 0
    reader = SqliteStore(tmp_path / "w.db")
    assert reader.counts()["trades"] == 5 and reader.get_checkpoint("shard-0") == "5"
    # a clean stop folds the logged position changes, trades and ticks into their tables
    assert reader.logged == {"position_log": 0, "trade_log": 0, "tick_log": 0}
    assert reader.db.execute("SELECT net_qty FROM positions").fetchall() == [(300,)]
    assert [reader.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("trades", "ticks")] == [5, 5]
    reader.close()


def test_writer_process_when_commit_fails_then_the_engine_hears_why(tmp_path):
    cfg = StoreSection(path=str(tmp_path / "w.db"))
    w = StoreWriter(cfg)
    try:
        w.submit(1, batch(1))
        w.submit(2, CommitBatch(escalations=[escalation("x", "jw")], trades=batch(1).trades))  # trade id repeats
        # Both batches are journaled (durable, answerable); applying the second fails, and the
        # materializer's report reaches the engine as WriterError.
        with pytest.raises(WriterError, match="store writer failed: IntegrityError"):
            wait_for(lambda: w.poll_materialized() >= 2, 10)
    finally:
        w.close()
    # the batch that could not be applied is still journaled: nothing answered is lost
    with pytest.raises(Exception, match="UNIQUE"):
        SqliteStore(tmp_path / "w.db", role="engine")


def test_writer_process_when_engine_dies_then_writer_dies_with_it(tmp_path):
    pid = os.fork()
    if pid == 0:  # the "engine": spawns its writer, reports the writer's pid, then dies by SIGKILL
        w = StoreWriter(StoreSection(path=str(tmp_path / "w.db")))
        (tmp_path / "writer.pid").write_text(str(w.proc.pid))
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    writer_pid = int((tmp_path / "writer.pid").read_text())

    def gone() -> bool:
        try:
            os.kill(writer_pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{writer_pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"

    assert wait_for(gone, 10), "the writer outlived its engine"


def test_store_lock_when_a_second_engine_opens_the_store_then_it_is_refused(tmp_path):
    cfg = msgspec.convert({"store": {"path": str(tmp_path / "w.db")}}, Config)
    fd = lock_store(cfg)
    try:
        with pytest.raises(SystemExit, match="one engine per store"):
            lock_store(cfg, wait_s=0.2)
    finally:
        os.close(fd)
    os.close(lock_store(cfg, wait_s=0.2))  # free again once the first is gone


def test_materializer_when_a_reader_stops_the_checkpoint_short_then_the_journal_keeps_its_batches(tmp_path):
    """The journal may reuse a segment only once the tables have synced its batches; a PASSIVE
    checkpoint that a reader's snapshot stops short (and that may sync nothing) must not say so."""
    path = tmp_path / "w.db"
    store = SqliteStore(path, role="writer")
    journal = JournalWriter(path, after=0)
    mat = _Materializer(store, "inproc://unused")  # its checkpoint step alone, not its thread
    applied = store.materialize(held=[(journal.append([_enc.encode((0, batch(0)))]), _enc.encode((0, batch(0))))])
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM orders").fetchone()  # a snapshot at batch 0, held open
    frame = _enc.encode((1, batch(1)))
    applied = store.materialize(held=[(journal.append([frame]), frame)])
    assert applied == 2
    mat._sync_tables(applied)
    assert mat.durable == 0, "the checkpoint stopped short of batch 1, yet the journal was told it may reuse it"
    reader.rollback()
    mat._sync_tables(applied)
    assert mat.durable == 2
    reader.close()
    store.close()
    journal.close()
