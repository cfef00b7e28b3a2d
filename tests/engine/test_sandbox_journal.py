"""The sandbox broker's journal, over real files: what it executed survives a reopen and is never
executed twice; a record torn by a crash is dropped, not read; a foreign file is refused."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.broker.base import BrokerOrder
from engine.broker.sandbox import MAGIC, JournalError, SandboxBroker, read_call_counts


def bo(coid: str, price: float = 100.0) -> BrokerOrder:
    return BrokerOrder(coid, "acct", "NIFTY26DECFUT", "BUY", 65, "LIMIT", price)


def test_sandbox_when_reopened_then_answers_a_resend_as_first_executed_and_counts_it(tmp_path):
    path = tmp_path / "broker.log"
    first = SandboxBroker(path, fill_probability=0.5, seed=3)
    results = first.submit([bo(f"o-{i}") for i in range(40)])
    first.close()
    assert {r.status for r in results} == {"FILLED", "FAILED"}  # both outcomes occur at p=0.5

    again = SandboxBroker(path, fill_probability=0.5, seed=3)
    resent = again.submit([bo("o-7"), bo("new-1"), bo("o-30")])
    assert resent[0] == results[7] and resent[2] == results[30]  # same trade ids, same outcome
    assert resent[1].client_order_id == "new-1"
    assert again.lookup(["o-0", "o-39", "nope"]) == {"o-0": results[0], "o-39": results[39]}
    counts = again.call_counts()
    again.close()
    assert counts["o-7"] == 2 and counts["o-30"] == 2 and counts["o-8"] == 1 and counts["new-1"] == 1
    assert len(counts) == 41
    assert read_call_counts(path) == counts  # what another process reads


def test_sandbox_when_one_id_twice_in_one_submit_then_executed_once_and_counted_twice(tmp_path):
    broker = SandboxBroker(tmp_path / "b.log", fill_probability=1.0)
    a, b = broker.submit([bo("x"), bo("x")])
    assert a == b and a.status == "FILLED"
    assert broker.call_counts() == {"x": 2}
    broker.close()


def test_sandbox_when_last_record_torn_by_a_crash_then_it_is_dropped_and_appends_go_on(tmp_path):
    path = tmp_path / "b.log"
    broker = SandboxBroker(path, fill_probability=1.0)
    kept = broker.submit([bo("kept")])[0]
    broker.submit([bo("torn")])
    broker.close()
    with open(path, "r+b") as f:  # the crash cut the last record short
        f.truncate(os.path.getsize(path) - 3)

    reopened = SandboxBroker(path, fill_probability=1.0)
    assert reopened.lookup(["kept", "torn"]) == {"kept": kept}  # the torn one never happened
    assert reopened.submit([bo("torn")])[0].status == "FILLED"  # so it executes now, once
    reopened.close()
    assert read_call_counts(path) == {"kept": 1, "torn": 1}


def test_sandbox_when_a_torn_header_claims_a_huge_length_then_the_scan_stops_there(tmp_path):
    path = tmp_path / "b.log"
    broker = SandboxBroker(path, fill_probability=1.0)
    kept = broker.submit([bo("kept")])[0]
    broker.close()
    with open(path, "ab") as f:
        f.write(b"\xff\xff\xff\x7f" + bytes(8))  # length ~2 GiB, then nothing
    reopened = SandboxBroker(path, fill_probability=1.0)
    assert reopened.lookup(["kept"]) == {"kept": kept}
    assert read_call_counts(path) == {"kept": 1}
    reopened.submit([bo("next")])
    reopened.close()
    assert read_call_counts(path) == {"kept": 1, "next": 1}


def test_sandbox_when_two_instances_share_a_journal_then_each_sees_the_others_executions(tmp_path):
    path = tmp_path / "b.log"
    filling, rejecting = SandboxBroker(path, 1.0), SandboxBroker(path, 0.0)
    filled = filling.submit([bo("a")])[0]
    assert rejecting.submit([bo("a"), bo("b")]) == [filled, rejecting.lookup(["b"])["b"]]
    assert rejecting.lookup(["b"])["b"].status == "FAILED"
    assert filling.call_counts() == {"a": 2, "b": 1}
    filling.close()
    rejecting.close()


def test_sandbox_when_file_is_not_a_journal_then_refused_with_the_reason(tmp_path):
    old = tmp_path / "sandbox-broker.db"
    old.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(JournalError, match="SQLite"):
        SandboxBroker(old)
    other = tmp_path / "notes.txt"
    other.write_bytes(b"hello")
    with pytest.raises(JournalError, match="not a sandbox journal"):
        SandboxBroker(other)
    assert other.read_bytes() == b"hello"  # left as it was


def test_sandbox_when_new_then_file_starts_with_its_magic(tmp_path):
    broker = SandboxBroker(tmp_path / "b.log")
    broker.submit([bo("m")])
    broker.close()
    assert (tmp_path / "b.log").read_bytes().startswith(MAGIC)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=8), min_size=1, max_size=12),
       st.floats(0, 1))
def test_sandbox_when_any_submits_and_reopens_then_each_id_executed_once_with_one_answer(tmp_path_factory, batches, p):
    path = tmp_path_factory.mktemp("sbx") / "b.log"
    broker = SandboxBroker(path, fill_probability=p, seed=5)
    first: dict[str, object] = {}
    sent: dict[str, int] = {}
    for n, ids in enumerate(batches):
        if n % 3 == 2:  # a restart now and then
            broker.close()
            broker = SandboxBroker(path, fill_probability=p, seed=5)
        coids = [f"id-{i}" for i in ids]
        for coid, r in zip(coids, broker.submit([bo(c) for c in coids])):
            assert first.setdefault(coid, r) == r  # always the first execution's answer
            sent[coid] = sent.get(coid, 0) + 1
    assert broker.call_counts() == sent == read_call_counts(path)
    broker.close()
