"""One writer per shared store: two real engines (ZeroMQ, SQLite stores of their own) contend for one
writer lease, with Couchbase's record semantics in memory (no cluster can run here). The standby
answers `health` as such and refuses everything else with STANDBY, recording nothing; a sidecar's
runner feeds it nothing; a clean stop hands the lease over and the standby takes over; an engine
whose lease another holds stops itself.

The servers run on threads of this process, so they can share the record; each still has its own
store writer and outbox processes."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from engine.client import EngineClient
from engine.config import load
from engine.server import Server
from engine.store.lease import LeaseLost, WriterLease
from engine_testkit import NO_LIMITS, order, wait_until
from tests.support.lease_fakes import MemoryLeaseRecord
from sidecars.link import EngineLink
from sidecars.memory import MemorySource
from sidecars.runtime import Runner

TTL = 3  # short, so a lost lease is noticed within a second (the config's minimum is for real stores)


class Running:
    """A Server on a thread, as `wojak engine` runs one; `error` is what ended it."""

    def __init__(self, eng, record: MemoryLeaseRecord, holder: str, slow_start_s: float = 0.0) -> None:
        self.server = Server(load(eng.config), lease=WriterLease(record, TTL, holder=holder))
        if slow_start_s:  # a long journal replay or reconciliation with the broker
            start = self.server.engine.start
            self.server.engine.start = lambda: (time.sleep(slow_start_s), start())
        self.endpoint, self.config = eng.endpoint, eng.config
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.server.serve_forever()
        except BaseException as e:  # noqa: BLE001 - the test reads it
            self.error = e

    def health(self) -> dict:
        with EngineClient(self.endpoint, timeout_s=10) as c:
            return c.call("health").data

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def pair(start_engine):
    record = MemoryLeaseRecord()
    a = Running(start_engine("lease-a", launch=False, risk=NO_LIMITS), record, "engine-a")
    wait_until(lambda: a.health().get("standby") is False)
    b = Running(start_engine("lease-b", launch=False, risk=NO_LIMITS), record, "engine-b")
    yield record, a, b
    for r in (a, b):
        if r.thread.is_alive():
            r.stop()


def test_standby_when_another_engine_holds_the_lease_then_refuses_and_records_nothing(pair):
    record, a, b = pair
    health = b.health()
    assert health["standby"] is True and health["lease_holder"] == "engine-a"
    with EngineClient(b.endpoint) as c:
        resp = c.call("submit_order", [order("ls-1")])
        assert not resp.ok and resp.error.startswith("STANDBY") and "engine-a" in resp.error
        assert not c.call("get_order", args={"client_order_id": "ls-1"}).ok
        resp = c.call("halt", args={"reason": "not from a standby"})
        assert not resp.ok and resp.error.startswith("STANDBY")
    assert b.server.engine.stats["FILLED"] == 0 and b.server.engine.store.get_decision("ls-1") is None
    status, halt = (subprocess.run([sys.executable, "-m", "wojak.cli", *args, "--config", str(b.config)],
                                   capture_output=True, text=True, timeout=60) for args in (["status"], ["halt"]))
    assert status.returncode == 0 and "standing by" in status.stdout and "engine-a" in status.stdout, status
    assert halt.returncode == 1 and "STANDBY" in halt.stderr, halt
    with EngineClient(a.endpoint) as c:  # the holder decides as ever
        assert c.submit(order("ls-2"))[0]["status"] == "FILLED"
    assert record.holder() == "engine-a"


def test_standby_when_holder_stops_cleanly_then_takes_over_at_once_and_a_runner_feeds_it_only_then(pair):
    record, a, b = pair
    source = MemorySource([order_json(f"lr-{i}") for i in range(30)])
    link = EngineLink(b.endpoint, window=10, resend_after_s=0.5, give_up_s=30)
    runner = Runner(source, link, receive_max=10, receive_wait_s=0.05)
    ran = threading.Thread(target=runner.run, daemon=True)
    ran.start()
    try:
        time.sleep(2.0)  # the engine stands by: nothing received, nothing bounced back to the source
        assert (len(source.ready), source.requeues, source.acked) == (30, 0, {})
        a.stop()  # a spot reclaim's SIGTERM: finishes, then hands the lease over
        assert a.error is None and record.holder() != "engine-a"
        wait_until(lambda: b.health().get("standby") is False, timeout=10)
        assert record.holder() == "engine-b"
        wait_until(lambda: len(source.acked) == 30, timeout=30)
        assert source.requeues == 0 and {d["status"] for d in source.acked.values()} == {"FILLED"}
    finally:
        runner.stop()
        ran.join(30)
        link.close()


def test_holder_when_another_engine_takes_its_lease_then_stops_itself(pair):
    record, a, b = pair
    writer = a.server.writer
    record.steal("engine-x")  # what a partition or an operator's second engine can make
    a.thread.join(TTL + 5)  # noticed at the next renewal, a third of the lease later
    assert not a.thread.is_alive()
    assert isinstance(a.error, LeaseLost) and "engine-x" in str(a.error)
    assert writer.proc.returncode == -signal.SIGKILL  # its writer stopped at once: no more writes
    assert record.holder() == "engine-x"  # a stopped engine does not remove another's lease
    assert b.health()["standby"] is True


def order_json(coid: str) -> bytes:
    import json

    return json.dumps(order(coid, account=f"acct-{coid[-1]}")).encode()


def test_holder_when_its_start_up_outlasts_the_lease_then_keeps_it_and_serves(start_engine):
    record = MemoryLeaseRecord()
    a = Running(start_engine("lease-slow", launch=False, risk=NO_LIMITS), record, "engine-a", slow_start_s=TTL)
    try:
        wait_until(lambda: a.health().get("standby") is False, timeout=TTL + 10)
        assert a.error is None and record.holder() == "engine-a"
        with EngineClient(a.endpoint) as c:
            assert c.submit(order("lslow-1"))[0]["status"] == "FILLED"
    finally:
        a.stop()
