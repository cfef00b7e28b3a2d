"""The store writer: a child process that commits the engine's batches, so the engine never waits on disk.

    engine: gate batch N+1 ...                  | send answers of N
    writer:        journal batch N (fdatasync)   | DONE N ...  tables <- N, N+1, ... | MATERIALIZED N+1

The engine hands each batch's `CommitBatch` to the writer over a ZeroMQ PAIR (`ipc://` in a private
directory). SQLite: the writer's main thread appends whatever is queued to the batch journal with one
write and one fdatasync (group commit) and confirms DONE: the engine may answer those batches. Its
materializer thread then applies journaled batches to the tables, many per transaction, and confirms
MATERIALIZED on a second socket: from then the engine reads those decisions from the store instead
of from memory (see batch_journal.py). A store without a journal (Couchbase) commits each group
directly and confirms both at once. Why a process and not a thread: SQLite releases the GIL only
inside each statement step, so a writer thread would stall on the GIL whenever the engine is busy
in Python - which under load is always.

Safety: the writer dies with its engine (PR_SET_PDEATHSIG on Linux, a parent check elsewhere), and it
shares the engine's store lock, so a restarted engine cannot open the store before both are gone.
Nothing the writer had not confirmed was answered, so losing it loses nothing. A commit that fails
stops the writer with the error; the engine then stops too (its memory is ahead of the store).
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import msgspec
import zmq

from engine.config import StoreSection
from engine.store.base import CommitBatch, merge_frames

log = logging.getLogger("wojak.writer")

# Frames: engine -> writer a msgpack (seq, CommitBatch), or STOP; writer -> engine READY once the
# store is open, then DONE + the last durable seq (8 bytes) after each commit, or FAILED + why; on
# the second socket DONE + the last seq the tables hold (materialized), or FAILED + why.
READY = b"ready"
STOP = b"stop"
DONE = b"D"
FAILED = b"F"
MAX_GROUP = 64  # batches merged into one transaction at most
WRITER_NICE = 5
CHECKPOINT_BATCHES = 12  # batches materialized between WAL checkpoints (SQLite)
MATERIALIZER_NICE = 10

_enc = msgspec.msgpack.Encoder()
_dec_seq = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])  # just the seq: the batch stays bytes


class WriterError(RuntimeError):
    """The writer failed or vanished: the engine must stop, its memory is ahead of the store."""


class StoreWriter:
    """The engine's end: spawn the writer, hand it batches, read back what is durable and applied."""

    def __init__(self, store: StoreSection, pass_fds: tuple[int, ...] = ()) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="wojak-writer-"))
        ctx = zmq.Context.instance()
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"ipc://{self._dir}/writer.sock")
        self.mat_sock = ctx.socket(zmq.PULL)
        self.mat_sock.setsockopt(zmq.LINGER, 0)
        self.mat_sock.bind(f"ipc://{self._dir}/materialized.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.store.writer", f"ipc://{self._dir}", msgspec.json.encode(store).decode(),
             str(os.getpid())],
            pass_fds=pass_fds, preexec_fn=die_with_parent if sys.platform == "linux" else None)
        self.submitted = 0
        self.confirmed = 0  # durable: may be answered
        self.materialized = 0  # in the tables: may be read from the store
        self._await(READY, 60)

    def submit(self, seq: int, batch: CommitBatch) -> None:
        """Hand a batch over. The engine binds this PAIR, so with the writer gone there is no pipe to
        queue into and a plain send would block for ever (the engine hung, not stopped, when its
        writer was killed): send without blocking, and while that cannot, check the writer lives."""
        frame = _enc.encode((seq, batch))
        while True:
            try:
                self.sock.send(frame, zmq.NOBLOCK, copy=False)
                break
            except zmq.Again:
                self.check_alive()
                self.sock.poll(100, zmq.POLLOUT)
        self.submitted = seq

    def poll_confirmed(self) -> int:
        """Read every confirmation waiting; returns the highest durable sequence number."""
        self.confirmed = _drain(self.sock, self.confirmed)
        return self.confirmed

    def poll_materialized(self) -> int:
        self.materialized = _drain(self.mat_sock, self.materialized)
        return self.materialized

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise WriterError(f"store writer exited with status {code}")

    def close(self, timeout: float = 60.0, abandon: bool = False) -> None:
        """Commit and apply everything submitted, then stop the writer. abandon: stop it now, with
        nothing more written (what was not confirmed was not answered; the next engine recovers)."""
        try:
            if abandon and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
            elif self.proc.poll() is None:
                self.sock.send(STOP)
                self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            log.error("store writer did not stop cleanly: %s", e)
            self.proc.kill()
        finally:
            self.sock.close()
            self.mat_sock.close()
            for p in self._dir.iterdir():
                p.unlink(missing_ok=True)
            self._dir.rmdir()

    def _await(self, what: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(100):
                frame = self.sock.recv()
                if frame == what:
                    return
                _confirmation(frame)  # raises on an error frame
            self.check_alive()
        self.proc.kill()
        raise WriterError(f"store writer sent no {what!r} within {timeout:.0f}s")


def _drain(sock: zmq.Socket, have: int) -> int:
    while True:
        try:
            frame = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return have
        have = max(have, _confirmation(frame))


def _confirmation(frame: bytes) -> int:
    if frame[:1] == DONE and len(frame) == 9:
        return int.from_bytes(frame[1:], "big")
    raise WriterError(f"store writer failed: {frame[1:].decode(errors='replace')}"[:2000])


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the engine dies, however it dies."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _done(seq: int) -> bytes:
    return DONE + seq.to_bytes(8, "big")


def _failed(why: str) -> bytes:
    return FAILED + why[:2000].encode()


def _take(sock: zmq.Socket, parent: int) -> list[bytes] | None:
    """The frames waiting (at least one), or None when the engine is gone."""
    while not sock.poll(1000):
        if os.getppid() != parent:
            return None  # nothing unconfirmed was answered
    frames = [sock.recv()]
    while len(frames) < MAX_GROUP:
        try:
            frames.append(sock.recv(zmq.NOBLOCK))
        except zmq.Again:
            break
    return frames


class _Materializer(threading.Thread):
    """Applies journaled batches to the tables, off the answer path, and says how far it got."""

    def __init__(self, store, endpoint: str) -> None:
        super().__init__(name="wojak-materializer", daemon=True)
        self.store = store
        self.endpoint = endpoint
        # (journal seqs and frames of one commit, the engine's last seq), in journal order
        self.todo: queue.Queue[tuple[list[tuple[int, bytes]], int] | None] = queue.Queue()
        self.durable = 0  # journal seq up to which the tables are synced: prunable
        self.failed: str | None = None

    def run(self) -> None:
        # Below everything else: the journal thread (the answer path) and the engine run first.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MATERIALIZER_NICE)
        push = zmq.Context.instance().socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 5000)
        push.connect(self.endpoint)
        waiting: deque[tuple[int, int]] = deque()  # (journal seq, engine seq)
        since_checkpoint = 0
        applied = 0
        try:
            finishing = False
            while not (finishing and not waiting):
                items = [self.todo.get()]
                while True:
                    try:
                        items.append(self.todo.get_nowait())
                    except queue.Empty:
                        break
                finishing = finishing or None in items
                held = [f for i in items if i is not None for f in i[0]]
                waiting.extend((i[0][-1][0], i[1]) for i in items if i is not None)
                if not waiting:
                    continue
                # The frames are in hand: no reading them back (unless a reader applied some and
                # they no longer follow on - then from the journal).
                applied = self.store.materialize(held=held)
                last = None
                while waiting and waiting[0][0] <= applied:
                    last = waiting.popleft()[1]
                    since_checkpoint += 1
                if last is not None:
                    push.send(_done(last))
                # Position changes, trades and ticks are logged and folded into their indexed tables
                # in bulk, so an index page is written once per fold, not once per commit (sqlite.py).
                self.store.fold_logs()
                # Checkpoints small and steady: every CHECKPOINT_BATCHES batches (~1 MB of pages to
                # flush). With one every ~50 rounds, each flushed ~20 MB and the engine's intent
                # fdatasync waited behind it (measured p99 4.3 ms; 1.7 ms this way). 12 since the
                # position log halved the pages per batch (6 and 24 measured worse). Everything
                # applied so far is synced by it, so the journal may reuse its segments.
                if since_checkpoint >= CHECKPOINT_BATCHES:
                    since_checkpoint = 0
                    self._sync_tables(applied)
            # Stopping: everything folded and synced.
            self.store.fold_logs(everything=True)
            self._sync_tables(applied)
        except Exception as e:  # noqa: BLE001 - the engine must hear of it and stop
            log.exception("materializing failed")
            self.failed = f"{type(e).__name__}: {e}"
            push.send(_failed(self.failed))
        finally:
            push.close()

    def _sync_tables(self, applied: int) -> None:
        """Checkpoint; when it copied the whole WAL into the database (and so synced both), what
        was applied up to `applied` is durable in the tables and the journal may reuse those
        segments. A reader's open snapshot can stop a PASSIVE checkpoint short - and one that
        copies nothing syncs nothing - so a partial one leaves the mark where it was: the journal
        keeps those batches (adding segments if it must) until a later checkpoint completes."""
        _, wal_frames, copied = self.store.checkpoint("PASSIVE")
        if wal_frames == copied:
            self.durable = applied


def serve(endpoint: str, store_cfg: StoreSection, parent: int) -> int:
    """The writer: journal (or commit) every batch waiting as one, confirm the last."""
    from engine.store import open_store

    if store_cfg.kind != "sqlite":
        # No journal: the commit is on the answer path; below the engine's decisions, a little.
        os.nice(WRITER_NICE)
    # The answer path (journal commits) takes the GIL back within 0.1 ms of the materializer.
    sys.setswitchinterval(0.0001)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when the writer stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(f"{endpoint}/writer.sock")
    try:
        store = open_store(store_cfg, role="writer")
    except Exception as e:  # noqa: BLE001 - reported to the engine, which fails its start with it
        sock.send(_failed(f"cannot open the store: {e}"))
        return 1
    try:
        if hasattr(store, "journal_writer"):
            return _serve_journaled(sock, store, f"{endpoint}/materialized.sock", parent)
        return _serve_direct(sock, store, f"{endpoint}/materialized.sock", parent)
    finally:
        store.close()
        sock.close()


def _serve_journaled(sock: zmq.Socket, store, mat_endpoint: str, parent: int) -> int:
    journal = store.journal_writer()
    mat = _Materializer(store, mat_endpoint)
    mat.start()

    def commit(jobs: list[bytes], engine_seq: int) -> None:
        if mat.failed:
            raise WriterError(mat.failed)
        journal.prune(mat.durable)
        last = journal.append(jobs)
        first = last - len(jobs) + 1  # numbered in order
        mat.todo.put((list(zip(range(first, last + 1), jobs)), engine_seq))

    def finish() -> int:
        mat.todo.put(None)
        mat.join()
        return 1 if mat.failed else 0

    try:
        return _serve_loop(sock, parent, commit, finish)
    finally:
        journal.close()


def _serve_direct(sock: zmq.Socket, store, mat_endpoint: str, parent: int) -> int:
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(mat_endpoint)

    def commit(jobs: list[bytes], engine_seq: int) -> None:
        store.commit(merge_frames(jobs))
        push.send(_done(engine_seq))  # committed is applied: no journal here

    try:
        return _serve_loop(sock, parent, commit, lambda: 0)
    finally:
        push.close()


def _serve_loop(sock: zmq.Socket, parent: int, commit, finish) -> int:
    """Every batch waiting is committed as one, then confirmed DONE; STOP ends it with `finish()`."""
    sock.send(READY)
    while True:
        frames = _take(sock, parent)
        if frames is None:
            return 0
        jobs = [f for f in frames if f != STOP]
        if jobs:
            last = _dec_seq.decode(jobs[-1])[0]  # the engine's seq of the last batch
            try:
                commit(jobs, last)  # durable when it returns
            except Exception as e:  # noqa: BLE001 - the engine must hear of it and stop
                log.exception("commit failed")
                sock.send(_failed(f"{type(e).__name__}: {e}"))
                return 1
            sock.send(_done(last))
        if frames[-1] == STOP:
            return finish()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    endpoint, store_json, parent = argv
    return serve(endpoint, msgspec.json.decode(store_json, type=StoreSection), int(parent))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
