"""The intent log (engine/store/intent_log.py) over real files: what is pending survives a reopen,
exactly; the two segments take turns however long the log runs; an intent pending for a long time
is carried from segment to segment; a torn record ends a scan without losing what came before."""
from __future__ import annotations

import os

import pytest

from engine.broker.base import BrokerOrder
from engine.store import intent_log
from engine.store.base import Intent
from engine.store.intent_log import IntentLog


def intent(n: int) -> Intent:
    coid = f"il-{n}"
    return Intent(coid, f"h{n}", {"client_order_id": coid, "pad": "x" * 200},
                  [BrokerOrder(coid, "a", "FUTA", "BUY", 50, "LIMIT", 100.0)], n)


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(intent_log, "SEGMENT_BYTES", 8 * 1024)  # a few records per segment


def test_reopen_when_some_resolved_then_exactly_the_others_pending(tmp_path):
    log = IntentLog(tmp_path / "il")
    log.append([intent(1), intent(2)])
    log.append([intent(3)], resolved=["il-1"])
    log.close()
    again = IntentLog(tmp_path / "il")
    assert sorted(again.pending) == ["il-2", "il-3"]
    assert again.pending["il-3"] == intent(3)
    again.close()


def test_rotation_when_segments_fill_then_the_two_take_turns(tmp_path, small_segments):
    log = IntentLog(tmp_path / "il")
    for n in range(200):  # far more than two segments hold
        log.append([intent(n)], resolved=[f"il-{n - 1}"] if n else [])
    assert len(list((tmp_path / "il").glob("*.log"))) == 2
    assert list(log.pending) == ["il-199"]
    log.close()
    assert list(IntentLog(tmp_path / "il").pending) == ["il-199"]


def test_rotation_when_an_old_intent_stays_pending_then_carried_along_and_kept(tmp_path, small_segments):
    log = IntentLog(tmp_path / "il")
    log.append([intent(0)])  # never resolved: its broker call failed, say
    for n in range(1, 200):
        log.append([intent(n)], resolved=[f"il-{n - 1}"] if n > 1 else [])
    assert sorted(log.pending) == ["il-0", "il-199"]
    assert len(list((tmp_path / "il").glob("*.log"))) == 2
    log.close()
    assert sorted(IntentLog(tmp_path / "il").pending) == ["il-0", "il-199"]


def test_scan_when_last_record_torn_then_earlier_records_kept(tmp_path):
    log = IntentLog(tmp_path / "il")
    log.append([intent(1)])
    log.append([intent(2)])
    seg, end = log.segments[log.active].path, log.offset
    log.close()
    with open(seg, "r+b") as f:  # the second record half written, as a crash mid-write leaves it
        f.seek(end - 40)
        f.write(os.urandom(40))
    assert list(IntentLog(tmp_path / "il").pending) == ["il-1"]
