"""EngineLink under many submitting threads, against a real ZeroMQ ROUTER that answers at once.

The I/O thread once batched straight from a deque other threads appended to; under load that raised
"deque mutated during iteration", the I/O thread died, and the sidecar forwarded nothing more. A tiny
GIL switch interval makes the threads interleave at almost every bytecode, so the old code fails
here within a few thousand items.
"""
from __future__ import annotations

import sys
import threading
import time

import pytest
import zmq

from engine import protocol
from sidecars.link import EngineLink, LinkClosed, Outcome


class AnsweringRouter:
    """A stand-in engine on a real socket: answers every request with one ACCEPTED per item."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            ident, frame = self.sock.recv_multipart()
            req = protocol.decode_request(frame)
            self.requests += 1
            results = [{"status": "ACCEPTED"}] * len(req.items or [])
            self.sock.send_multipart([ident, protocol.encode(protocol.Response(id=req.id, results=results))])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def router(tmp_path):
    r = AnsweringRouter(f"ipc://{tmp_path}/engine.sock")
    yield r, f"ipc://{tmp_path}/engine.sock"
    r.close()


@pytest.fixture
def busy_gil():
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_link_when_four_threads_submit_at_once_then_every_item_is_answered_and_the_io_thread_lives(router, busy_gil):
    _, endpoint = router
    link = EngineLink(endpoint, window=5_000, batch_max=50)
    answered: list[Outcome] = []
    per_thread = 5_000

    def submit_many(k: int) -> None:
        for i in range(per_thread):
            link.submit({"k": k, "i": i}, answered.append, kind="tick")

    try:
        threads = [threading.Thread(target=submit_many, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert _wait(lambda: len(answered) == 4 * per_thread, 30), f"{len(answered)} of {4 * per_thread} answered"
        assert link._thread.is_alive()
        assert all(o.decision == {"status": "ACCEPTED"} for o in answered)
        assert link.in_flight == 0
    finally:
        link.close()


def test_link_when_its_io_thread_fails_then_items_complete_with_an_error_and_submit_raises(router):
    _, endpoint = router
    link = EngineLink(endpoint, window=100, batch_max=1)
    outcomes: list[Outcome] = []

    def explode(outcome: Outcome) -> None:  # a callback with a bug runs on the I/O thread
        raise ValueError("callback bug")

    try:
        link.submit({"n": 0}, explode, kind="tick")
        assert _wait(lambda: not link._thread.is_alive(), 10), "the I/O thread should have stopped"
        with pytest.raises(LinkClosed):
            link.submit({"n": 1}, outcomes.append, kind="tick")
        assert link.in_flight == 0  # nothing is left waiting for an answer that cannot come
    finally:
        link.close()  # and closing a link whose thread is gone is quiet

