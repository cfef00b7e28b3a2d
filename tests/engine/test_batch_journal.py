"""The batch journal's files: numbering across restarts, torn tails, segments filled, reused once
pruned and never read stale, foreign files refused, the SQLite-file journal of earlier versions
applied - over real files (small segments, so a test crosses many)."""
from __future__ import annotations

import sqlite3
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from engine.store import batch_journal
from engine.store.base import CommitBatch
from engine.store.batch_journal import JournalError, JournalReader, JournalWriter
from engine.store.sqlite import SqliteStore
from tests.engine.test_store_writer import batch

SMALL = 4096
_enc = msgspec.msgpack.Encoder()


def frame(n: int, size: int = 300) -> bytes:
    return n.to_bytes(8, "big") + bytes([n % 251]) * (size - 8)


@pytest.fixture
def small_segments():
    with mock.patch.object(batch_journal, "SEGMENT_BYTES", SMALL):
        yield


def test_journal_when_reopened_then_numbering_goes_on_and_a_reader_sees_all(tmp_path, small_segments):
    path = tmp_path / "j.db"
    w = JournalWriter(path, after=0)
    assert w.append([frame(1), frame(2)]) == 2
    w.close()
    w = JournalWriter(path, after=0)
    assert w.append([frame(3)]) == 3
    r = JournalReader(path)
    assert r.after(0) == [(1, frame(1)), (2, frame(2)), (3, frame(3))]
    assert r.after(2) == [(3, frame(3))] and r.last() == 3
    w.append([frame(4)])
    assert r.after(3) == [(4, frame(4))]  # read on from where it stopped
    r.close()
    w.close()


def test_journal_when_empty_then_numbering_starts_after_the_tables_mark(tmp_path, small_segments):
    w = JournalWriter(tmp_path / "j.db", after=41)
    assert w.append([frame(1)]) == 42
    w.close()


def test_journal_when_last_record_torn_then_dropped_and_overwritten(tmp_path, small_segments):
    path = tmp_path / "j.db"
    w = JournalWriter(path, after=0)
    w.append([frame(1)])
    w.append([frame(2)])
    seg = w.active.path
    w.close()
    with open(seg, "r+b") as f:  # the second record's last bytes never reached the disk
        f.seek(2 * (16 + 300) - 5)
        f.write(b"\xff" * 5)
    r = JournalReader(path)
    assert [s for s, _ in r.after(0)] == [1]
    w = JournalWriter(path, after=0)
    assert w.append([frame(7)]) == 2  # numbered on from what is whole, written over the torn one
    assert JournalReader(path).after(0) == [(1, frame(1)), (2, frame(7))]
    r.close()
    w.close()


def test_journal_when_segments_fill_then_reused_only_once_pruned_and_never_read_stale(tmp_path, small_segments):
    path = tmp_path / "j.db"
    w = JournalWriter(path, after=0)
    r = JournalReader(path)
    n = 0
    for _ in range(30):  # 12 frames a segment: 30 appends of one take 3 segments, none reusable
        n = w.append([frame(n + 1)])
    assert len(w.segments) == 3
    assert [s for s, _ in r.after(0)] == list(range(1, 31))
    w.prune(24)  # the first two segments (1-12, 13-24) are synced in the tables
    for _ in range(14):
        n = w.append([frame(n + 1)])
    assert len(w.segments) == 3  # the two pruned ones taken again, no new file
    # a reader that had read the old contents sees the new ones, and nothing stale
    assert r.after(24) == [(s, frame(s)) for s in range(25, 45)]
    assert JournalReader(path).after(24) == [(s, frame(s)) for s in range(25, 45)]
    with pytest.raises(JournalError, match="does not fit"):
        w.append([frame(0, SMALL)])
    r.close()
    w.close()


def test_journal_when_a_segment_is_not_its_own_then_the_writer_refuses_to_start(tmp_path, small_segments):
    path = tmp_path / "j.db"
    JournalWriter(path, after=0).close()
    (batch_journal.journal_dir(path) / "000007.log").write_bytes(b"not a segment")
    with pytest.raises(JournalError, match="000007.log is 13 bytes"):
        JournalWriter(path, after=0)


def test_journal_when_a_group_exceeds_a_segment_then_split_across_segments_and_all_read_back(tmp_path, small_segments):
    path = tmp_path / "j.db"
    w = JournalWriter(path, after=0)
    frames = [frame(n, 1500) for n in range(1, 9)]  # ~12 KB: three segments' worth
    assert w.append(frames) == 8
    assert len(w.segments) >= 3
    assert JournalReader(path).after(0) == list(zip(range(1, 9), frames))
    assert w.append([frame(9)]) == 9  # and on it goes
    w.close()
    assert [s for s, _ in JournalReader(path).after(0)] == list(range(1, 10))


def test_journal_when_one_frame_exceeds_a_segment_then_refused_and_nothing_written(tmp_path, small_segments):
    path = tmp_path / "j.db"
    w = JournalWriter(path, after=0)
    assert w.append([frame(1)]) == 1
    with pytest.raises(JournalError, match="does not fit"):
        w.append([frame(2), frame(3, SMALL)])
    assert w.append([frame(2)]) == 2
    w.close()
    assert [s for s, _ in JournalReader(path).after(0)] == [1, 2]


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.one_of(st.tuples(st.just("append"), st.lists(st.integers(10, 1500), min_size=1, max_size=8)),
                                st.tuples(st.just("prune"), st.integers(0, 5)),
                                st.tuples(st.just("reopen"), st.just(0))), max_size=40))
def test_journal_any_appends_prunes_and_restarts_then_all_after_the_pruned_point_reads_back(tmp_path_factory, steps):
    path = tmp_path_factory.mktemp("bj") / "j.db"
    with mock.patch.object(batch_journal, "SEGMENT_BYTES", SMALL):
        w = JournalWriter(path, after=0)
        r = JournalReader(path)
        written: dict[int, bytes] = {}
        pruned = 0
        try:
            for kind, arg in steps:
                if kind == "append":
                    frames = [frame(len(written) + i + 1, size) for i, size in enumerate(arg)]
                    last = w.append(frames)
                    written.update(zip(range(last - len(frames) + 1, last + 1), frames))
                elif kind == "prune":  # the tables hold and synced everything but the newest few
                    pruned = max(pruned, len(written) - arg)
                    w.prune(pruned)
                else:
                    w.close()
                    w = JournalWriter(path, after=pruned)
                    w.prune(pruned)
                want = [(s, written[s]) for s in sorted(written) if s > pruned]
                assert r.after(pruned) == want
                assert JournalReader(path).after(pruned) == want
        finally:
            r.close()
            w.close()


def test_store_when_a_journal_of_the_sqlite_kind_is_left_then_its_batches_are_applied_and_it_goes(tmp_path):
    """An engine of an earlier version journaled to `<name>-batches.db`: whatever it answered and
    had not applied is applied at the upgraded engine's start, then the old file is removed."""
    path = tmp_path / "w.db"
    SqliteStore(path, role="writer").close()
    legacy = batch_journal.legacy_journal_path(path)
    old = sqlite3.connect(legacy)
    old.execute("CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, batch BLOB NOT NULL)")
    old.executemany("INSERT INTO journal(batch) VALUES (?)", [(_enc.encode((n, batch(n))),) for n in range(3)])
    old.commit()
    old.close()
    reader = SqliteStore(path)  # applies, leaves the file to the store's owner
    assert reader.counts()["trades"] == 3 and legacy.exists()
    reader.close()
    engine_side = SqliteStore(path, role="engine")
    assert engine_side.get_decision("jw-2").status == "FILLED"
    assert not legacy.exists()
    # the new journal numbers on from there
    w = engine_side.journal_writer()
    assert w.append([_enc.encode((3, CommitBatch(trades=batch(3).trades)))]) == 4
    w.close()
    engine_side.close()
    assert SqliteStore(path).counts()["trades"] == 4
