"""Escalations leave through the durable outbox: committed with the decision, delivered at least once
to the configured sink (a JSON-lines file, or an HTTP POST), retried while the sink is down."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.engine_bench import child_pids
from engine.config import EscalationSection, StoreSection
from engine.models import Escalation
from engine.outbox import OutboxJob, OutboxProcess
from engine.store import open_store
from engine.store.base import CommitBatch
from engine_testkit import codes, market, one, scrape_metrics, wait_until, wojak_book_rows
from tests.support.ports import free_port


class _Receiver(BaseHTTPRequestHandler):
    """The risk-management system's intake: records each POST; answers 503 to the first `fail_first`."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.posts.append((self.path, self.headers.get("Idempotency-Key"), body))
            failing = len(srv.posts) <= srv.fail_first
        self.send_response(503 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver_port():
    return free_port()


def _serve(port: int, fail_first: int) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    srv.posts, srv.fail_first, srv.lock = [], fail_first, threading.Lock()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _outbox_pending(eng) -> int:
    with closing(eng.store()) as s:
        return s.counts()["outbox_pending"]


def test_escalation_when_http_sink_down_at_first_then_delivered_on_retry(start_engine, receiver_port):
    eng = start_engine("outbox-http", escalation={"kind": "http", "url": f"http://127.0.0.1:{receiver_port}/esc",
                                                   "timeout_s": 1.0})
    with eng.client() as c:
        d = one(c, market("o-http-1", "NORF", account="outbox"))
    assert d["status"] == "ESCALATED" and codes(d) == ["NO_REFERENCE_PRICE"]
    # nothing listens yet: the escalation waits in the outbox, committed with its decision - and
    # `wojak book escalations` shows it waiting, with the attempt and why it failed
    assert wait_until(lambda: _outbox_pending(eng) == 1, timeout=5)
    waiting = wait_until(lambda: [r for r in wojak_book_rows(eng, "escalations", "--undelivered")
                                  if r["attempts"] >= 1], timeout=15)
    assert [(r["escalation_id"], r["delivered"]) for r in waiting] == [("E-o-http-1", None)]
    assert waiting[0]["last_error"] and waiting[0]["reasons"] == ["NO_REFERENCE_PRICE"]
    eng.kill()  # ... and survives a crash of the engine while it waits
    eng.start()
    srv = _serve(receiver_port, fail_first=1)  # up, but its first answer is an error
    try:
        assert wait_until(lambda: _outbox_pending(eng) == 0, timeout=20), srv.posts
        with srv.lock:
            posts = list(srv.posts)
    finally:
        srv.shutdown()
        srv.server_close()
        eng.stop()
    assert len(posts) >= 2  # the 503 was retried
    path, key, body = posts[-1]
    assert path == "/esc" and key == d["escalation_id"] == body["escalation_id"] == "E-o-http-1"
    assert body["client_order_id"] == "o-http-1" and body["account"] == "outbox"
    assert body["reasons"] == d["reasons"] and body["order"]["order_type"] == "MARKET"
    assert {p[2]["escalation_id"] for p in posts} == {"E-o-http-1"}
    assert wojak_book_rows(eng, "escalations", "--undelivered") == []
    [done] = wojak_book_rows(eng, "escalations")
    assert done["escalation_id"] == "E-o-http-1" and done["delivered"]
    assert done["attempts"] >= len(posts) + 1  # the refused ones too


def _escalated_and_delivered(eng, coid: str, timeout: float) -> bool:
    """Send a market order with no reference price (ESCALATED); has it reached the log sink in time?"""
    with eng.client() as c:
        d = one(c, market(coid, "NORF", account="outbox"))
    assert d["status"] == "ESCALATED"
    sink = eng.dir / "data" / "escalations.jsonl"
    return wait_until(lambda: sink.exists() and f"E-{coid}" in sink.read_text(), timeout=timeout)


def test_escalation_when_engine_clock_ahead_of_wall_clock_then_still_delivered(start_engine):
    """The outbox must deliver at once whatever the engine clock says: a drill or replay run with
    simulated_start in the future must not hold its escalations until the wall clock gets there."""
    ahead = dt.datetime.now(dt.timezone(dt.timedelta(hours=5, minutes=30))).replace(microsecond=0) \
        + dt.timedelta(days=30)
    eng = start_engine("outbox-ahead", engine={"simulated_start": ahead.replace(hour=11).isoformat()})
    delivered = _escalated_and_delivered(eng, "o-ahead-1", timeout=5)
    eng.stop()
    assert delivered, ("escalation stuck in the outbox: its due time is on the engine clock, "
                       "the worker reads the wall clock")


def _outbox_pids(engine_pid: int) -> list[int]:
    """The engine's outbox process(es) (the delivery runs in a process of its own)."""
    return child_pids(engine_pid, b"engine.outbox")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def test_outbox_process_when_engine_stops_or_dies_then_it_goes_too(start_engine):
    eng = start_engine("outbox-proc")
    [first] = _outbox_pids(eng.proc.pid)
    eng.stop()
    assert wait_until(lambda: not _alive(first), timeout=5), "the outbox process outlived a clean stop"
    eng.start()
    [second] = _outbox_pids(eng.proc.pid)
    eng.kill()
    assert wait_until(lambda: not _alive(second), timeout=5), "the outbox process outlived a SIGKILLed engine"


def test_outbox_process_when_killed_under_an_idle_engine_then_started_again_and_delivers(start_engine):
    """No escalation needs to come along to wake it: the engine looks after it once a second."""
    port = free_port()
    eng = start_engine("outbox-restart", engine={"metrics_port": port})
    [first] = _outbox_pids(eng.proc.pid)
    assert scrape_metrics(port)[("wojak_engine_outbox_restarts_total", ())] == 0
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: [p for p in _outbox_pids(eng.proc.pid) if p != first and _alive(p)], timeout=10), \
        "the engine did not start its outbox again"
    delivered = _escalated_and_delivered(eng, "o-restart-1", timeout=10)
    restarts = scrape_metrics(port)[("wojak_engine_outbox_restarts_total", ())]
    eng.stop()
    assert delivered
    assert restarts == 1  # an operator sees it, not only the log line


def test_outbox_process_when_it_dies_then_the_next_wake_restarts_it_and_nothing_is_lost(tmp_path):
    store_cfg = StoreSection(path=str(tmp_path / "w.db"))
    sink = tmp_path / "esc.jsonl"
    box = OutboxProcess(OutboxJob(store_cfg, EscalationSection(path=str(sink)), checkpoint=True))
    box.RESTART_AFTER_S = 0.0
    store = open_store(store_cfg)
    try:
        box.start()
        store.commit(CommitBatch(escalations=[Escalation("E-1", "o-1", "acct", ["MAX_NOTIONAL: x"], {}, 1)]))
        box.wake()
        # Delivered and marked so: killed between the two, the process would deliver E-1 again after
        # its restart (at least once, as designed) - not what this test is about.
        assert wait_until(lambda: sink.exists() and "E-1" in sink.read_text()
                          and store.counts()["outbox_pending"] == 0, timeout=10)
        dead = box.proc
        assert box.restarts == 0
        dead.kill()
        dead.wait()
        store.commit(CommitBatch(escalations=[Escalation("E-2", "o-2", "acct", ["MAX_NOTIONAL: y"], {}, 2)]))
        box.wake()  # finds it dead: starts another, which drains what is due at start
        assert box.proc is not dead and box.proc.poll() is None
        assert box.restarts == 1
        assert wait_until(lambda: "E-2" in sink.read_text(), timeout=10)
        assert store.counts()["outbox_pending"] == 0
    finally:
        box.stop()
        store.close()
    assert box.proc is None
    assert [json.loads(line)["escalation_id"] for line in sink.read_text().splitlines()] == ["E-1", "E-2"]


def _garbage_http(port: int, answers: list[bytes]) -> socket.socket:
    """A risk endpoint gone wrong: whatever it is sent, it answers the next of `answers` (the last
    one from then on) and hangs up."""
    srv = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        n = 0
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answers[min(n, len(answers) - 1)])
            n += 1

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_outbox_when_the_endpoint_answers_garbage_then_retried_with_the_error_and_delivered_once_sane(tmp_path):
    """http.client raises BadStatusLine (no OSError) on a status line that is not HTTP: once that
    ended the outbox process, which the engine restarted into the same end every 5 s, with nothing
    recorded. It is a failed delivery like any other: kept, retried with backoff, the error shown."""
    port = free_port()
    srv = _garbage_http(port, [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    store_cfg = StoreSection(path=str(tmp_path / "g.db"))
    box = OutboxProcess(OutboxJob(store_cfg, EscalationSection(kind="http", url=f"http://127.0.0.1:{port}/esc",
                                                               timeout_s=2.0), checkpoint=True))
    store = open_store(store_cfg)
    try:
        store.commit(CommitBatch(escalations=[Escalation("E-g", "o-g", "acct", ["MAX_NOTIONAL: x"], {}, 1)]))
        box.start()
        box.wake()
        assert wait_until(lambda: store.counts()["outbox_pending"] == 0, timeout=20)
        [row] = store.escalations()
        assert row.delivered_ns and row.attempts == 2
        assert "BadStatusLine" in row.last_error or "SSH-2.0" in row.last_error, row.last_error
        assert box.proc.poll() is None and box.restarts == 0  # the process lived through it
    finally:
        box.stop()
        store.close()
        srv.close()


class _CountingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.sets: list[float] = []

    def set(self) -> None:
        self.sets.append(time.monotonic())
        super().set()


def test_outbox_wakes_when_engine_sends_hundreds_then_passed_on_a_few_times_and_never_late():
    from engine.outbox import _wakes

    class Worker:  # what _wakes uses of OutboxWorker
        min_gap_s = 0.2
        wake = _CountingEvent()
        stopping = threading.Event()
        stop = stopping.set

    worker = Worker()
    r, w = os.pipe()
    reader = threading.Thread(target=_wakes, args=(worker, r), daemon=True)
    reader.start()
    try:
        sent = time.monotonic()
        os.write(w, b"w")  # after an idle stretch: passed on at once
        assert wait_until(lambda: worker.wake.sets, timeout=2)
        assert worker.wake.sets[0] - sent < 0.05
        for _ in range(300):  # a busy engine: hundreds a second, for ~0.3 s
            os.write(w, b"w")
            time.sleep(0.001)
        time.sleep(worker.min_gap_s)
        sets = worker.wake.sets
        assert 2 <= len(sets) <= 8, sets  # 301 bytes: one wake per half gap at most, not one per byte
        assert all(b - a >= worker.min_gap_s / 2 - 0.01 for a, b in zip(sets, sets[1:])), sets
    finally:
        os.close(w)  # the engine closed its end: the reader stops the worker and ends
        reader.join(timeout=2)
        os.close(r)
    assert not reader.is_alive() and worker.stopping.is_set()
