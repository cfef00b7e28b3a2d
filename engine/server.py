"""The engine process: a ZeroMQ ROUTER loop around `Engine.handle`.

Each turn takes every request waiting on the socket (up to `max_batch`), hands them to the engine as
one batch (one group commit), then sends the answers. Nothing is answered before it is durable, so
the process may be killed at any instant: a sidecar resends what it had in flight, and the engine's
idempotency answers the resend from the store.
"""
from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from pathlib import Path

import zmq

from engine import curve
from engine.broker.sandbox import SandboxBroker
from engine.config import Config
from engine.core import Engine
from engine.instruments import load as load_instruments
from engine.outbox import OutboxWorker, make_sink
from engine.store import open_store

log = logging.getLogger("wojak.engine")


def build(cfg: Config) -> Engine:
    """Open the store, the broker and the instrument master named by the config."""
    from engine.clock import Clock

    clock = Clock(cfg.risk.timezone, cfg.engine.simulated_start)
    store = open_store(cfg.store, hot_path=True)
    journal = cfg.broker.journal or str(Path(cfg.store.path).with_name("sandbox-broker.db"))
    broker = SandboxBroker(journal, cfg.broker.fill_probability, cfg.broker.seed, cfg.broker.latency_ms)
    instruments = load_instruments(cfg.instruments.path, clock.local().date())
    return Engine(cfg, store, broker, instruments, clock)


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


class Server:
    def __init__(self, cfg: Config, engine: Engine | None = None) -> None:
        self.cfg = cfg
        self.engine = engine or build(cfg)
        self.stopping = threading.Event()
        self.ctx = zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.auth = None
        self.outbox = OutboxWorker(lambda: open_store(cfg.store), make_sink(cfg.escalation),
                                   cfg.escalation.max_attempts, now_ns=self.engine.clock.now_ns)
        self.batches = 0
        self.requests = 0

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
        sock.bind(ec.endpoint)
        self.sock = sock

    def serve_forever(self) -> None:
        self.engine.start()
        self.bind()
        self.outbox.start()
        # The hot path allocates no reference cycles (structs, dicts and lists, freed by refcount):
        # move what start-up built out of the collector's sight and collect rarely, so a full
        # collection of a large heap never lands in the middle of a batch's answer latency.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
        log.info("engine serving on %s (store=%s, broker=%s, %d instruments)", self.cfg.engine.endpoint,
                 self.cfg.store.kind, self.cfg.broker.kind, len(self.engine.instruments))
        sock, handle, max_batch = self.sock, self.engine.handle, self.cfg.engine.max_batch
        # SQLite: the outbox thread's checkpoints copy the WAL into the database off the hot path, but
        # under sustained writes they never catch up to the end, so the WAL never restarts and grows
        # without bound (and reads slow down with it). A checkpoint from the writer itself, between
        # batches and after the answers are out, finds little left to copy and lets the WAL restart.
        checkpoint = getattr(self.engine.store, "checkpoint", None)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self.stopping.is_set():
                if not poller.poll(100):
                    continue
                envelopes, payloads = [], []
                while len(payloads) < max_batch:
                    try:
                        msg = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    envelopes.append(msg[:-1])
                    payloads.append(msg[-1])
                if not payloads:
                    continue
                escalated_before = self.engine.stats["ESCALATED"]
                answers = handle(payloads)  # returns only after the batch is committed
                for env, answer in zip(envelopes, answers):
                    sock.send_multipart(env + [answer])
                self.batches += 1
                self.requests += len(payloads)
                if checkpoint is not None and self.batches % 200 == 0:
                    checkpoint("PASSIVE")
                if self.engine.stats["ESCALATED"] != escalated_before:
                    self.outbox.wake.set()
        finally:
            self.close()

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.outbox.stop()
        if self.outbox.is_alive():
            self.outbox.join(timeout=10)
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.auth is not None:
            self.auth.stop()
        self.engine.store.close()
        self.engine.broker.close()


def run(cfg: Config) -> int:
    """`wojak engine`: serve until SIGTERM/SIGINT, finishing the batch in hand."""
    server = Server(cfg)
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    started = time.monotonic()
    server.serve_forever()
    log.info("engine stopped after %.1fs: %d requests in %d batches", time.monotonic() - started,
             server.requests, server.batches)
    return 0
