"""The sidecar's link to the engine: one ZeroMQ DEALER owned by one I/O thread.

- a bounded window of items in flight (`submit` blocks when it is full: backpressure to the source);
- batching: whatever was submitted since the last send goes out as one frame (up to `batch_max`);
- resend: a frame unanswered after `resend_after_s` is sent again under a new request id (safe: the
  engine is idempotent by client_order_id; a late answer to the old id is ignored);
- reconnection: ZeroMQ reconnects by itself; with ZMQ_IMMEDIATE nothing is queued for a dead peer;
  a socket monitor tracks the connection (`connected`), and on reconnecting every unanswered frame
  is resent at once (it was lost with the old peer), the resend timer covering the rest;
- give up: an item unanswered after `give_up_s` completes with an error, so the source requeues it.

Callbacks run on the I/O thread and must be quick (hand the outcome to your own thread or loop).

Threads: any thread may `submit`/`request`; they only append to `_inbox` (under `_space`). The I/O
thread alone moves items from there into its own `_queue` (popleft, one at a time) and batches from
that: iterating a deque another thread appends to raises "deque mutated during iteration", which once
killed this thread mid-stream and left a sidecar forwarding nothing. Should the I/O thread die anyway,
the link closes: in-flight items complete with an error (their source requeues them) and `submit`
raises LinkClosed, so the sidecar exits and is restarted rather than hanging.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec
import zmq
from zmq.utils.monitor import parse_monitor_message

from engine import curve, protocol

log = logging.getLogger("wojak.sidecar.link")

RECORDED = frozenset({"FILLED", "FAILED", "REJECTED", "ESCALATED", "ACCEPTED"})
# A message whose decision is one of these can never become an order: it goes to the dead-letter path.
DEAD_LETTER_CODES = frozenset({"SCHEMA", "DUPLICATE_ID_MISMATCH"})


class Outcome(msgspec.Struct):
    """The engine's answer for one item, or why there is none."""

    decision: dict | None = None
    error: str | None = None

    @property
    def recorded(self) -> bool:
        return self.decision is not None and self.decision.get("status") in RECORDED

    @property
    def dead_letter_reason(self) -> str | None:
        d = self.decision
        if d and d.get("status") == "REJECTED" and d.get("reasons"):
            first = d["reasons"][0]
            if first.split(":", 1)[0] in DEAD_LETTER_CODES:
                return first
        return None


Callback = Callable[[Outcome], None]


@dataclass(slots=True)
class _Item:
    kind: str
    payload: Any  # bytes of a source message, or a dict (order/tick)
    msg_id: str | None
    callback: Callback
    submitted: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Frame:
    kind: str
    items: list[_Item]
    sent: float
    args: dict | None = None
    control: Callback | None = None  # control requests answer with the whole Response


class LinkClosed(RuntimeError):
    pass


class EngineLink:
    def __init__(self, endpoint: str, window: int = 100, batch_max: int = 50, resend_after_s: float = 2.0,
                 give_up_s: float = 30.0, ctx: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.window = window
        self.batch_max = batch_max
        self.resend_after_s = resend_after_s
        self.give_up_s = give_up_s
        self.ctx = ctx or zmq.Context.instance()
        self._inbox: deque[_Item | _Frame] = deque()  # any thread appends (under _space)
        self._queue: deque[_Item | _Frame] = deque()  # the I/O thread's own
        self._space = threading.Condition()
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._frames: dict[int, _Frame] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._wake_lock = threading.Lock()  # the I/O thread closes the pipe; no write may race that
        self._wake_open = True
        os.set_blocking(self._wake_r, False)
        self._closing = threading.Event()
        self._connected = threading.Event()
        self.last_answer = 0.0  # monotonic time of the engine's last answer
        self.resends = 0
        self._thread = threading.Thread(target=self._run, name="wojak-link", daemon=True)
        self._thread.start()

    # -- API for adapters (any thread) ----------------------------------------------------------
    def submit(self, payload: Any, callback: Callback, msg_id: str | None = None, kind: str = "ingest",
               timeout: float | None = None) -> bool:
        """Queue one item; blocks while the window is full. False if it timed out waiting for space."""
        with self._space:
            if not self._space.wait_for(lambda: self._in_flight < self.window or self._closing.is_set(), timeout):
                return False
            if self._closing.is_set():
                raise LinkClosed("link is closed")
            self._in_flight += 1
            self._inbox.append(_Item(kind, payload, msg_id, callback))
        self._wake()
        return True

    def request(self, kind: str, args: dict | None = None, timeout: float = 5.0) -> protocol.Response:
        """A control or read request (health, get_order, positions, halt, resume); raises TimeoutError."""
        done = threading.Event()
        box: list[protocol.Response] = []

        def answered(resp: Any) -> None:
            box.append(resp)
            done.set()

        with self._space:
            if self._closing.is_set():
                raise LinkClosed("link is closed")
            self._inbox.append(_Frame(kind, [], 0.0, args or {}, answered))
        self._wake()
        if not done.wait(timeout) or not box:
            raise TimeoutError(f"engine at {self.endpoint} did not answer {kind} in {timeout}s")
        return box[0]

    @property
    def connected(self) -> bool:
        """True while a ZeroMQ connection to the engine is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def free(self) -> int:
        return max(0, self.window - self._in_flight)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight (graceful drain)."""
        with self._space:
            return self._space.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self) -> None:
        """Stop the I/O thread; items still in flight complete with an error (requeue them)."""
        self._closing.set()
        with self._space:
            self._space.notify_all()
        self._wake()
        self._thread.join(timeout=10)

    # -- the I/O thread ---------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._wake_lock:
            if not self._wake_open:  # the I/O thread is gone (a closed fd's number may be reused)
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass

    def _socket(self) -> tuple[zmq.Socket, zmq.Socket]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        curve.configure_client(sock, self.endpoint)
        # The monitor exists before connect(), so the first handshake cannot be missed.
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        sock.connect(self.endpoint)
        return sock, monitor

    def _run(self) -> None:
        sock, monitor = self._socket()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._closing.is_set():
                events = dict(poller.poll(100))
                if monitor in events:
                    self._connection_changed(sock, monitor)
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                if sock in events:
                    self._receive(sock)
                self._send_queued(sock)
                self._resend_or_give_up(sock)
        except Exception:  # noqa: BLE001 - a bug here must close the link loudly, never hang it
            log.exception("engine link I/O thread failed; closing the link")
        finally:
            with self._space:  # from here submit raises LinkClosed: nothing can slip in unanswered
                self._closing.set()
                self._take_inbox()
                self._space.notify_all()
            self._fail_all("ENGINE_LINK_CLOSED: sidecar stopping")
            sock.disable_monitor()
            monitor.close()
            sock.close()
            with self._wake_lock:
                self._wake_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _connection_changed(self, sock: zmq.Socket, monitor: zmq.Socket) -> None:
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # connected, and CURVE (if any) accepted us
                self._connected.set()
                for f in self._frames.values():  # lost with the previous peer, if there was one
                    if f.control is None:
                        f.sent = 0.0
            elif event == zmq.EVENT_DISCONNECTED:
                self._connected.clear()

    def _receive(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                resp = protocol.decode_response(frame)
            except msgspec.DecodeError:
                continue
            f = self._frames.pop(resp.id, None)
            if f is None:
                continue  # an answer to a frame already resent under a new id
            self.last_answer = time.monotonic()
            if f.control is not None:
                f.control(resp)
                continue
            results = resp.results or []
            for i, item in enumerate(f.items):
                if resp.ok and i < len(results):
                    self._complete(item, Outcome(decision=results[i]))
                else:
                    self._complete(item, Outcome(error=resp.error or "ENGINE_NO_ANSWER"))

    def _take_inbox(self) -> None:
        inbox, queue = self._inbox, self._queue
        while inbox:
            queue.append(inbox.popleft())

    def _send_queued(self, sock: zmq.Socket) -> None:
        self._take_inbox()
        while self._queue:
            head = self._queue[0]
            if isinstance(head, _Frame):
                frame = head
            else:
                kind, items = head.kind, []
                for it in itertools.islice(self._queue, self.batch_max):
                    if isinstance(it, _Frame) or it.kind != kind:
                        break
                    items.append(it)
                frame = _Frame(kind, items, 0.0)
            if not self._send(sock, frame):
                return  # no engine connected: keep them queued, try again on the next turn
            for _ in range(len(frame.items) or 1):
                self._queue.popleft()

    def _send(self, sock: zmq.Socket, frame: _Frame) -> bool:
        rid = next(self._ids)
        items = [it.payload for it in frame.items] if frame.items else None
        msg_ids = [it.msg_id or "" for it in frame.items] if frame.items and any(it.msg_id for it in frame.items) \
            else None
        try:
            sock.send(protocol.request(frame.kind, rid, items, frame.args, msg_ids), zmq.NOBLOCK)
        except zmq.Again:
            return False
        frame.sent = time.monotonic()
        self._frames[rid] = frame
        return True

    def _resend_or_give_up(self, sock: zmq.Socket) -> None:
        now = time.monotonic()
        while self._queue and isinstance(self._queue[0], _Item) and now - self._queue[0].submitted >= self.give_up_s:
            self._complete(self._queue.popleft(), Outcome(error=f"ENGINE_UNAVAILABLE: not connected in {self.give_up_s:.0f}s"))
        for rid, f in list(self._frames.items()):
            if now - f.sent < self.resend_after_s:
                continue
            del self._frames[rid]
            if f.control is not None:
                continue  # the caller's own timeout reports it
            alive = [it for it in f.items if now - it.submitted < self.give_up_s]
            for it in f.items:
                if now - it.submitted >= self.give_up_s:
                    self._complete(it, Outcome(error=f"ENGINE_UNAVAILABLE: no answer in {self.give_up_s:.0f}s"))
            if alive:
                self.resends += 1
                retry = _Frame(f.kind, alive, 0.0)
                if not self._send(sock, retry):
                    retry.sent = now  # not connected: try again after another resend interval
                    self._frames[-next(self._ids)] = retry

    def _complete(self, item: _Item, outcome: Outcome) -> None:
        try:
            item.callback(outcome)
        finally:
            with self._space:
                self._in_flight -= 1
                self._space.notify_all()

    def _fail_all(self, why: str) -> None:
        for f in self._frames.values():
            for it in f.items:
                self._complete(it, Outcome(error=why))
            if f.control is not None:
                f.control(protocol.Response(id=0, ok=False, error=why))
        self._frames.clear()
        while self._queue:
            head = self._queue.popleft()
            if isinstance(head, _Item):
                self._complete(head, Outcome(error=why))
            elif head.control is not None:
                head.control(protocol.Response(id=0, ok=False, error=why))
