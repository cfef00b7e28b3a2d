"""The contract every source adapter keeps, and the loop that drives a pull-style adapter.

An adapter turns its broker's deliveries into `Message`s and settles each one exactly as the engine's
answer says:

    ack(msg, decision)           the engine recorded a decision: remove the message at the broker
    requeue(msg, why)            no decision (engine down, broker pending): let the broker redeliver
    dead_letter(msg, reason)     recorded REJECTED as garbage: move it to the dead-letter path, then ack

All three are called on the adapter's own thread (the one running `Runner.run`), never before the
engine's answer for that message, so a crash at any instant leaves the message at the broker.
Graceful drain (SIGTERM): stop receiving, settle what comes back, requeue what does not, exit 0.

Only an engine that decides is fed: the runner receives nothing until its engine answers `health`
as the store's writer, and stops receiving while the engine stands by (another engine holds the
store's writer lease: it refuses everything with STANDBY). Fed anyway, a standby would hand every
message straight back to the broker, which would deliver it to this sidecar again, in a loop.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from engine import protocol
from sidecars import metrics
from sidecars.link import EngineLink, LinkClosed, Outcome

log = logging.getLogger("wojak.sidecar")

def engine_deciding(link: EngineLink, timeout_s: float = 1.0) -> bool:
    """True if the engine answers `health` and is not standing by."""
    try:
        resp = link.request("health", timeout=timeout_s)
    except (TimeoutError, LinkClosed):
        return False
    return bool(resp.ok and not (resp.data or {}).get("standby"))


def wait_for_engine(link: EngineLink, stopping: threading.Event, what: str) -> bool:
    """Block until the engine decides (True) or `stopping` is set (False), logging why it waits."""
    said = False
    while not stopping.is_set():
        if engine_deciding(link):
            if said:
                log.info("%s: the engine at %s decides now", what, link.endpoint)
            return True
        if not said:
            log.info("%s waits for the engine at %s (not answering, or standing by)", what, link.endpoint)
            said = True
        stopping.wait(1.0)
    return False


@dataclass(slots=True)
class Message:
    """One delivery from a source. `handle` is the adapter's own token (receipt handle, tag, offset)."""

    payload: bytes
    msg_id: str
    handle: Any = None
    received: float = field(default_factory=time.monotonic)
    # Sources that batch several orders in one message set `parts`; it is settled once all are answered.
    parts: list[bytes] | None = None
    # "ingest" lets the engine tell orders from ticks ("kind": "tick" in the JSON); a source with a
    # separate tick queue or topic says "tick" (or "submit_order" for an orders-only one).
    kind: str = "ingest"


class Source(ABC):
    """One broker's adapter. Subclasses hold one client; they translate its errors into logs and
    requeues, never into a lost message."""

    name = "source"

    @abstractmethod
    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to max_messages deliveries, waiting at most timeout_s for the first."""

    @abstractmethod
    def ack(self, msg: Message, decision: dict) -> None: ...

    @abstractmethod
    def requeue(self, msg: Message, why: str) -> None: ...

    @abstractmethod
    def dead_letter(self, msg: Message, reason: str, decision: dict) -> None: ...

    def heartbeat(self, in_flight: list[Message]) -> None:
        """Called every turn with the unanswered messages: extend leases/visibility where needed."""

    def close(self) -> None:
        """Release the client; messages not settled are redelivered by the broker."""


@dataclass
class _Pending:
    msg: Message
    outcomes: list[Outcome | None]


class Runner:
    """Drive a pull-style Source through an EngineLink until stopped."""

    def __init__(self, source: Source, link: EngineLink, receive_max: int = 10, receive_wait_s: float = 1.0,
                 drain_timeout_s: float = 20.0) -> None:
        self.source = source
        self.link = link
        self.receive_max = receive_max
        self.receive_wait_s = receive_wait_s
        self.drain_timeout_s = drain_timeout_s
        self.stopping = threading.Event()
        self._done: queue.SimpleQueue[tuple[int, int, Outcome]] = queue.SimpleQueue()
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self.settled = {"ack": 0, "requeue": 0, "dead_letter": 0}
        self.engine_deciding = False  # receive nothing until the engine says it decides
        self._engine_checked = 0.0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        try:
            while not self.stopping.is_set():
                self._settle_done(block=False)
                room = self.link.free() if self._engine_ready() else 0
                if room <= 0:  # window full, or no engine deciding: the source still hears from us (leases)
                    self._settle_done(block=True, timeout=0.05)
                    self.source.heartbeat([p.msg for p in self._pending.values()])
                    continue
                try:
                    msgs = self.source.receive(min(room, self.receive_max), self.receive_wait_s)
                except Exception as e:  # a broker hiccup must not kill the sidecar
                    log.warning("%s receive failed: %s", self.source.name, e)
                    time.sleep(0.5)
                    continue
                for m in msgs:
                    self._forward(m)
                self.source.heartbeat([p.msg for p in self._pending.values()])
            return self._drain()
        finally:
            self.source.close()

    def _engine_ready(self) -> bool:
        """Whether to receive: yes once the engine has said it decides, until it refuses with
        STANDBY; asked again at most once a second meanwhile."""
        if self.engine_deciding:
            return True
        now = time.monotonic()
        if now - self._engine_checked < 1.0:
            return False
        self._engine_checked = now
        self.engine_deciding = engine_deciding(self.link)
        if self.engine_deciding:
            log.info("%s: the engine at %s decides: receiving", self.source.name, self.link.endpoint)
        return self.engine_deciding

    def _forward(self, m: Message) -> None:
        self._seq += 1
        seq = self._seq
        parts = m.parts if m.parts is not None else [m.payload]
        self._pending[seq] = _Pending(m, [None] * len(parts))
        metrics.received(self.source.name)
        for i, part in enumerate(parts):
            # ":" keeps a part's id inside the engine's id alphabet, so garbage parts are keyed by it.
            self.link.submit(part, lambda o, s=seq, i=i: self._done.put((s, i, o)),
                             msg_id=f"{m.msg_id}:{i}" if m.parts is not None else m.msg_id, kind=m.kind)

    def _settle_done(self, block: bool, timeout: float = 0.0) -> None:
        try:
            first = self._done.get(timeout=timeout) if block else self._done.get_nowait()
        except queue.Empty:
            return
        batch = [first]
        while True:
            try:
                batch.append(self._done.get_nowait())
            except queue.Empty:
                break
        for seq, i, outcome in batch:
            p = self._pending.get(seq)
            if p is None:
                continue
            p.outcomes[i] = outcome
            if all(o is not None for o in p.outcomes):
                del self._pending[seq]
                self._settle(p.msg, p.outcomes)

    def _settle(self, msg: Message, outcomes: list[Outcome]) -> None:
        """One place decides what happens to a message at its broker."""
        latency = time.monotonic() - msg.received
        for o in outcomes:
            if o.decision is not None:
                metrics.decision(self.source.name, o.decision.get("status", "?"))
        try:
            if not all(o.recorded for o in outcomes):
                why = next((o.error or o.decision.get("status", "") for o in outcomes if not o.recorded), "")
                if why.startswith(protocol.STANDBY) and self.engine_deciding:
                    self.engine_deciding = False
                    self._engine_checked = time.monotonic()
                    log.warning("%s: the engine stands by (%s): receiving paused", self.source.name, why)
                self.source.requeue(msg, why or "no decision")
                self.settled["requeue"] += 1
                metrics.settled(self.source.name, "requeue", latency)
                return
            bad = next((o for o in outcomes if o.dead_letter_reason), None)
            if bad is not None:
                self.source.dead_letter(msg, bad.dead_letter_reason, bad.decision)
                self.settled["dead_letter"] += 1
                metrics.settled(self.source.name, "dead_letter", latency)
                return
            decision = outcomes[0].decision if len(outcomes) == 1 else {"parts": [o.decision for o in outcomes]}
            self.source.ack(msg, decision)
            self.settled["ack"] += 1
            metrics.settled(self.source.name, "ack", latency)
        except Exception as e:
            # The decision is recorded; the broker redelivers and the engine answers it as a duplicate.
            log.warning("%s settle of %s failed, requeueing: %s", self.source.name, msg.msg_id, e)
            try:
                self.source.requeue(msg, f"settle failed: {e}")
            except Exception as e2:  # the connection is gone: the broker redelivers on its own
                log.warning("%s requeue of %s failed too: %s", self.source.name, msg.msg_id, e2)

    def _drain(self) -> int:
        deadline = time.monotonic() + self.drain_timeout_s
        while self._pending and time.monotonic() < deadline:
            self._settle_done(block=True, timeout=0.1)
        for p in list(self._pending.values()):
            self.source.requeue(p.msg, "sidecar draining")
            self.settled["requeue"] += 1
        self._pending.clear()
        log.info("%s drained: %s", self.source.name, self.settled)
        return 0
