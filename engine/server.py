"""The engine process: a ZeroMQ ROUTER loop around `Engine.process`.

Each turn takes every request waiting on the socket (up to `max_batch`) as one batch, decides it,
and hands its commit to the store writer process; the answers wait, in order, until the writer
confirms that commit. Meanwhile the loop decides the next batch, so the disk and the gate work at
the same time (`[store] writer = "inline"` commits in the loop instead). Nothing is answered before
it is durable, so the process may be killed at any instant: a sidecar resends what it had in
flight, and the engine's idempotency answers the resend from the store.

One engine per store: an exclusive lock on `<store>.lock`, held by the engine and its writer, makes
a second engine (or a restart while the old writer lives) wait rather than write beside it. A
shared store (Couchbase) has a writer lease instead (engine/store/lease.py): an engine that does
not hold it stands by - bound, answering `health` as a standby and refusing everything else
(`STANDBY`, so the source redelivers to the engine that holds it) - and takes over when it lapses
or is handed over; the holder stops (exit 1) the moment it cannot prove it still holds it.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import zmq

from engine import curve, protocol
from engine.broker.sandbox import SandboxBroker
from engine.config import Config
from engine.core import Engine, Turn
from engine.instruments import Instrument, load as load_instruments
from engine.metrics import EngineMetrics
from engine.outbox import OutboxJob, OutboxProcess
from engine.store import open_store
from engine.store.lease import LeaseLost, LeaseUnavailable, WriterLease
from engine.store.writer import StoreWriter, WriterError

log = logging.getLogger("wojak.engine")

SWITCH_INTERVAL_S = 0.0005  # see run()
# A plain int: send_multipart combines pyzmq's flag enums for every part, 2.5 us an answer against
# 1.1 us for two sends like this (measured in process).
_SNDMORE = int(zmq.SNDMORE)


def build(cfg: Config) -> Engine:
    """Open the store, the broker and the instrument master named by the config."""
    from engine.clock import Clock

    clock = Clock(cfg.risk.timezone, cfg.engine.simulated_start)
    store = open_store(cfg.store, role="engine")
    journal = cfg.broker.journal or str(Path(cfg.store.path).with_name("sandbox-broker.log"))
    broker = SandboxBroker(journal, cfg.broker.fill_probability, cfg.broker.seed, cfg.broker.latency_ms)

    def master(day: dt.date) -> dict[str, Instrument]:  # loaded again each trading day and on SIGHUP
        return load_instruments(cfg.instruments.path, day, cfg.risk.holidays)

    return Engine(cfg, store, broker, master(clock.local().date()), clock, master)


def lock_store(cfg: Config, wait_s: float = 30.0) -> int | None:
    """Take the store's exclusive lock (SQLite); returns the fd that holds it."""
    if cfg.store.kind != "sqlite":
        return None
    path = Path(cfg.store.path).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise SystemExit(f"another engine holds {path}: one engine per store") from None
            time.sleep(0.05)


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


class Server:
    def __init__(self, cfg: Config, engine: Engine | None = None, lease: WriterLease | None = None) -> None:
        self.cfg = cfg
        self.lock_fd = lock_store(cfg)
        self.engine = engine or build(cfg)
        make_lease = getattr(self.engine.store, "writer_lease", None)  # a shared store's (Couchbase)
        self.lease = lease or (make_lease(cfg.store.lease_ttl_s) if make_lease is not None else None)
        self.writer: StoreWriter | None = None
        self._escalated = False
        self._last_request = 0.0
        self._collected_idle = True
        self.stopping = threading.Event()
        self.reload_asked = False  # SIGHUP: load the instrument master again, between batches
        self.ctx = zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.auth = None
        self.outbox = OutboxProcess(OutboxJob(cfg.store, cfg.escalation,
                                              self.engine.clock.now_ns() - time.time_ns(),
                                              checkpoint=cfg.store.writer == "inline"))  # else the writer's job
        self._outbox_checked = 0.0
        self.batches = 0
        self.requests = 0
        # Decided batches whose answers wait for the writer's confirmation: (seq, envelopes, answers)
        self.waiting: deque[tuple[int, list[list[bytes]], list[bytes]]] = deque()
        self.metrics: EngineMetrics | None = None

    def bind(self) -> None:
        ec = self.cfg.engine
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a vanished peer's answer is dropped, it will resend
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        if curve.configure_server(sock, ec.endpoint, ec.curve_public_env, ec.curve_secret_env) \
                and ec.curve_allowed_clients:
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=ec.curve_allowed_clients)
        path = ipc_path(ec.endpoint)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            sock.bind(ec.endpoint)
        except zmq.ZMQError as e:  # taken by another process, or no such address here: say which
            sock.close(0)
            raise SystemExit(f"cannot bind [engine] endpoint {ec.endpoint}: {e.strerror}") from None
        self.sock = sock

    def serve_forever(self) -> None:
        if self.lease is not None:
            self.bind()
            if not self._stand_by():  # stopped before it took the lease
                self.close()
                return
        with self._lease_kept_meanwhile():  # start-up (replay, reconciliation) may outlast the lease
            self.engine.start()
            if self.cfg.store.writer == "process":
                self.writer = StoreWriter(self.cfg.store, pass_fds=(self.lock_fd,) if self.lock_fd is not None else ())
        if self.sock is None:
            self.bind()
        self.outbox.start()
        if self.cfg.engine.metrics_port:
            self.metrics = EngineMetrics(self)
            port = self.metrics.serve(self.cfg.engine.metrics_port, self.cfg.engine.metrics_addr)
            log.info("engine metrics on http://%s:%d/metrics", self.cfg.engine.metrics_addr, port)
        self._gc_start()
        log.info("engine serving on %s (store=%s, writer=%s, broker=%s, %d instruments)", self.cfg.engine.endpoint,
                 self.cfg.store.kind, self.cfg.store.writer, self.cfg.broker.kind, len(self.engine.instruments))
        try:
            if self.writer is not None:
                self._serve_pipelined(self.writer)
            else:
                self._serve_inline()
        except LeaseLost:
            # Another engine may write the store from now on: not one more write from this one.
            if self.writer is not None:
                self.writer.close(abandon=True)
                self.writer = None
            raise
        finally:
            self.close()

    # -- the writer lease (a shared store) ----------------------------------------------------
    @contextmanager
    def _lease_kept_meanwhile(self) -> Iterator[None]:
        """Keep the writer lease from a thread while the main thread is busy with something long
        (start-up: the journal's replay, reconciliation with the broker) instead of serving. Lost
        meanwhile: the process stops at once, as if it had crashed - nothing has been answered yet,
        and not one more write may leave it."""
        lease = self.lease
        if lease is None:
            yield
            return
        done = threading.Event()

        def keep() -> None:
            while not done.wait(0.5):
                try:
                    lease.keep()
                except LeaseLost as e:
                    log.error("engine stopping during start-up: %s", e)
                    os._exit(1)

        keeper = threading.Thread(target=keep, name="wojak-lease-keeper", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def _stand_by(self) -> bool:
        """Until this engine holds the writer lease: `health` answers as a standby, anything else is
        refused with STANDBY (nothing is decided or recorded here: the source redelivers it to the
        engine that holds the lease). True once taken; False if stopped first."""
        lease, said = self.lease, ""
        while not self.stopping.is_set():
            try:
                if lease.try_acquire():
                    if said:
                        log.info("writer lease taken: this engine takes over")
                    return True
                holder = lease.record.holder() or "an engine whose lease is lapsing"
            except LeaseUnavailable as e:
                holder = f"unknown (the store did not answer: {e})"
            if holder != said:
                log.info("standing by: the writer lease of the store is held by %s", holder)
                said = holder
            deadline = time.monotonic() + 1.0
            while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
                if self.sock.poll(left * 1000):
                    envelopes, payloads = self._take()
                    self._send(envelopes, [_standby_answer(p, holder) for p in payloads])
        return False

    # -- garbage collection ------------------------------------------------------------------
    # The hot path creates no reference cycles (tests/engine/test_engine_gc.py holds it to that):
    # what it allocates is freed by reference counting. But what it keeps (positions, accounts,
    # rate windows, decisions in flight) counts towards the collector's thresholds, and a collection
    # then walks all of it: measured, 8-10 ms pauses in the middle of a batch, a few per benchmark
    # run even when only what the last 500 batches kept was in sight. So every batch ends by
    # freezing what exists: out of the collector's sight (refcounting still frees it) and the young
    # count back to zero - O(1), ~1 us - and no automatic collection runs under load. A full
    # collection (everything unfrozen) runs when the engine has been idle for a second: it finds
    # what a cycle the tests missed would leave.

    def _gc_start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)  # far above what one batch keeps: none within a batch
        self._collected_idle = True

    def _gc_turn(self) -> None:
        self._collected_idle = False
        gc.freeze()

    def _gc_idle(self) -> None:
        """Called when a poll timed out: collect once per idle stretch, everything included."""
        if not self._collected_idle:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._collected_idle = True

    def _take(self) -> tuple[list[list[bytes]], list[bytes]]:
        """The requests waiting, up to max_batch of them or max_batch_items items (at least one)."""
        envelopes, payloads = [], []
        sock, max_batch, max_items = self.sock, self.cfg.engine.max_batch, self.cfg.engine.max_batch_items
        items = 0
        while len(payloads) < max_batch and items < max_items:
            try:
                msg = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            envelopes.append(msg[:-1])
            payloads.append(msg[-1])
            items += protocol.count_items(msg[-1])
        return envelopes, payloads

    def _send(self, envelopes: list[list[bytes]], answers: list[bytes]) -> None:
        send = self.sock.send
        for env, answer in zip(envelopes, answers):
            for part in env:
                send(part, _SNDMORE)
            send(answer)

    def _serve_inline(self) -> None:
        # SQLite: the outbox process's checkpoints copy the WAL into the database off the hot path, but
        # under sustained writes they never catch up to the end, so the WAL never restarts and grows
        # without bound (and reads slow down with it). A checkpoint from the writer itself, between
        # batches and after the answers are out, finds little left to copy and lets the WAL restart.
        checkpoint = getattr(self.engine.store, "checkpoint", None)
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stopping.is_set():
            self._reload_if_asked()
            if not poller.poll(1000):
                self._tend(time.monotonic())
                self._gc_idle()
                continue
            envelopes, payloads = self._take()
            if not payloads:
                continue
            escalated_before = self.engine.stats["ESCALATED"]
            started = time.perf_counter()
            answers = self.engine.handle(payloads)  # returns only after the batch is committed
            if self.metrics is not None:
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self._send(envelopes, answers)
            self._count(len(payloads), escalated_before)
            if checkpoint is not None and self.batches % 200 == 0:
                checkpoint("PASSIVE")

    def _serve_pipelined(self, writer: StoreWriter) -> None:
        """Decide batch N+1 while the writer commits batch N; answers leave in order, once durable."""
        engine, sock, waiting = self.engine, self.sock, self.waiting
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(writer.sock, zmq.POLLIN)
        poller.register(writer.mat_sock, zmq.POLLIN)
        reading = True

        def answer_confirmed() -> None:
            """Send every answer whose batch the writer has confirmed durable (in order)."""
            done = writer.poll_confirmed()
            engine.durable(done)
            while waiting and waiting[0][0] <= done:
                _, envelopes, answers = waiting.popleft()
                self._send(envelopes, answers)

        def between_steps() -> None:  # while a batch is being decided: answers need not wait for it
            if waiting and writer.sock.poll(0):
                answer_confirmed()

        while not (self.stopping.is_set() and not waiting):
            events = dict(poller.poll(100))
            self._reload_if_asked()
            if writer.sock in events:
                answer_confirmed()
            if writer.mat_sock in events:
                engine.confirm(writer.poll_materialized())
                if self._escalated:  # the outbox reads what the tables hold
                    self._escalated = False
                    self.outbox.wake()
            if not events:
                self._tend(time.monotonic())
                if waiting:
                    writer.check_alive()
                elif time.monotonic() - self._last_request > 1.0:
                    self._gc_idle()
            # Back-pressure: with the writer far behind (or when stopping) the loop stops reading,
            # and the sources' windows fill.
            want = (not self.stopping.is_set() and len(waiting) < 64
                    and writer.submitted - writer.materialized < 1024)
            if want and not reading:
                poller.register(sock, zmq.POLLIN)
            elif reading and not want:
                poller.unregister(sock)
            reading = want
            if not reading or sock not in events:
                continue
            envelopes, payloads = self._take()
            if not payloads:
                continue
            escalated_before = engine.stats["ESCALATED"]
            started = time.perf_counter()
            turn: Turn = engine.process(payloads, between_steps)
            if self.metrics is not None:
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
            if turn.seq:
                writer.submit(turn.seq, turn.commit)
            wait_for = turn.seq or writer.submitted
            if wait_for <= writer.confirmed and not waiting:
                self._send(envelopes, turn.answers)  # nothing to commit and nothing ahead of it
            else:
                waiting.append((wait_for, envelopes, turn.answers))
            self._count(len(payloads), escalated_before)

    def reload(self, *_: object) -> None:
        """SIGHUP: the instrument master is loaded again before the next batch."""
        self.reload_asked = True

    def _reload_if_asked(self) -> None:
        if self.reload_asked:
            self.reload_asked = False
            self.engine.reload_instruments(why="SIGHUP")

    def _tend(self, now: float) -> None:
        """After every batch and every idle second: the writer lease kept (LeaseLost stops the
        engine); once a second, an outbox process that died is started again."""
        if self.lease is not None:
            self.lease.keep()
        if now - self._outbox_checked >= 1.0:
            self._outbox_checked = now
            self.outbox.ensure_running()

    def _count(self, requests: int, escalated_before: int) -> None:
        self.batches += 1
        self.requests += requests
        self._last_request = time.monotonic()
        self._tend(self._last_request)
        self._gc_turn()
        if self.engine.stats["ESCALATED"] != escalated_before:
            self._escalated = True
            if self.writer is None:
                self.outbox.wake()

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.outbox.stop()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.auth is not None:
            self.auth.stop()
        if self.lease is not None:  # after the writer's last commit: a standby may take over now
            self.lease.release()
        self.engine.store.close()
        self.engine.broker.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _standby_answer(payload: bytes, holder: str) -> bytes:
    """A standby's answer: `health` says so; anything else is refused, to be redelivered."""
    try:
        req = protocol.decode_request(payload)
    except Exception:  # noqa: BLE001 - garbage gets the same refusal, under no id
        req = None
    if req is not None and req.kind == "health":
        return protocol.encode(protocol.Response(id=req.id, data={"ok": True, "standby": True, "lease_holder": holder}))
    return protocol.encode(protocol.Response(id=req.id if req is not None else 0, ok=False,
                                             error=f"{protocol.STANDBY}: another engine writes this store ({holder})"[:300]))


def run(cfg: Config) -> int:
    """`wojak engine`: serve until SIGTERM/SIGINT, finishing the batch in hand; SIGHUP loads the
    instrument master again."""
    # The engine's loop shares the GIL with any other thread of the process (the CURVE
    # authenticator, when configured): by default a thread that wants the GIL waits up to 5 ms for
    # the holder to yield it. 0.5 ms bounds that wait. (Escalations are delivered by a process of
    # their own, outbox.py, for the same reason.)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = Server(cfg)
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, server.reload)
    started = time.monotonic()
    try:
        server.serve_forever()
    except WriterError as e:
        log.error("engine stopping: %s (nothing unconfirmed was answered; a restart recovers)", e)
        return 1
    except LeaseLost as e:
        log.error("engine stopping: %s (nothing unconfirmed was answered; the engine that holds the lease "
                  "takes over)", e)
        return 1
    log.info("engine stopped after %.1fs: %d requests in %d batches", time.monotonic() - started,
             server.requests, server.batches)
    return 0
