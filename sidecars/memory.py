"""An in-memory source: the runtime's reference adapter and the fastest way to test the contract.

It behaves like a broker with at-least-once delivery: a requeued message goes back on the queue,
an unsettled message is redelivered when the source is reopened (`crash()`), acks remove it.
"""
from __future__ import annotations

import threading
from collections import deque

from sidecars.runtime import Message, Source


class MemorySource(Source):
    name = "memory"

    def __init__(self, payloads: list[bytes] | None = None) -> None:
        self.ready: deque[Message] = deque()
        self.unacked: dict[str, Message] = {}
        self.acked: dict[str, dict] = {}
        self.dead: dict[str, str] = {}
        self.requeues = 0
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        for i, p in enumerate(payloads or []):
            self.put(p, f"m{i}")

    def put(self, payload: bytes, msg_id: str) -> None:
        with self._cv:
            self.ready.append(Message(payload, msg_id))
            self._cv.notify()

    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        with self._cv:
            self._cv.wait_for(lambda: bool(self.ready), timeout_s)
            out = []
            while self.ready and len(out) < max_messages:
                m = self.ready.popleft()
                fresh = Message(m.payload, m.msg_id)
                self.unacked[m.msg_id] = fresh
                out.append(fresh)
            return out

    def ack(self, msg: Message, decision: dict) -> None:
        with self._lock:
            self.unacked.pop(msg.msg_id, None)
            self.acked[msg.msg_id] = decision

    def requeue(self, msg: Message, why: str) -> None:
        with self._cv:
            if self.unacked.pop(msg.msg_id, None) is not None:
                self.requeues += 1
                self.ready.append(Message(msg.payload, msg.msg_id))
                self._cv.notify()

    def dead_letter(self, msg: Message, reason: str, decision: dict) -> None:
        with self._lock:
            self.unacked.pop(msg.msg_id, None)
            self.dead[msg.msg_id] = reason

    def crash(self) -> None:
        """What a broker does when its consumer dies: every unacked message becomes ready again."""
        with self._cv:
            for m in self.unacked.values():
                self.ready.append(Message(m.payload, m.msg_id))
            self.unacked.clear()
            self._cv.notify_all()

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self.ready) + len(self.unacked)
