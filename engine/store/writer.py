"""The store writer: a child process that commits the engine's batches, so the engine never waits on disk.

    engine: gate batch N+1 ... | send answers of N
    writer:        commit batch N (rows, fsync) | confirm N

The engine hands each batch's `CommitBatch` to the writer over a ZeroMQ PAIR (`ipc://` in a private
directory) and answers the batch only when the writer confirms its sequence number. The writer
commits in order, and whatever queued up while it was busy goes into one transaction (group
commit), so a slow disk makes batches bigger, not answers later. Why a process and not a thread:
SQLite releases the GIL only inside each statement step, so a writer thread would stall on the GIL
whenever the engine is busy in Python - which under load is always.

Safety: the writer dies with its engine (PR_SET_PDEATHSIG on Linux, a parent check elsewhere), and it
shares the engine's store lock, so a restarted engine cannot open the store before both are gone.
Nothing the writer had not confirmed was answered, so losing it loses nothing. A commit that fails
stops the writer with the error; the engine then stops too (its memory is ahead of the store).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import zmq

from engine.config import StoreSection
from engine.store.base import CommitBatch

log = logging.getLogger("wojak.writer")

# Frames: engine -> writer a msgpack (seq, CommitBatch), or STOP; writer -> engine READY once the
# store is open, then DONE + the last committed seq (8 bytes) after each commit, or FAILED + why.
READY = b"ready"
STOP = b"stop"
DONE = b"D"
FAILED = b"F"
MAX_GROUP = 64  # batches merged into one transaction at most
CHECKPOINT_EVERY = 100  # commits between background WAL checkpoints (SQLite)
WRITER_NICE = 5

_enc = msgspec.msgpack.Encoder()
_dec_job = msgspec.msgpack.Decoder(tuple[int, CommitBatch])


class WriterError(RuntimeError):
    """The writer failed or vanished: the engine must stop, its memory is ahead of the store."""


class StoreWriter:
    """The engine's end: spawn the writer, hand it batches, read back what is committed."""

    def __init__(self, store: StoreSection, pass_fds: tuple[int, ...] = ()) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="wojak-writer-"))
        self.endpoint = f"ipc://{self._dir}/writer.sock"
        self.sock = zmq.Context.instance().socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.store.writer", self.endpoint, msgspec.json.encode(store).decode(),
             str(os.getpid())],
            pass_fds=pass_fds, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.submitted = 0
        self.confirmed = 0
        self._await(READY, 60)

    def submit(self, seq: int, batch: CommitBatch) -> None:
        self.sock.send(_enc.encode((seq, batch)), copy=False)
        self.submitted = seq

    def poll_confirmed(self) -> int:
        """Read every confirmation waiting; returns the highest committed sequence number."""
        while True:
            try:
                frame = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.confirmed
            self.confirmed = max(self.confirmed, self._confirmation(frame))

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise WriterError(f"store writer exited with status {code}")

    def close(self, timeout: float = 30.0) -> None:
        """Commit everything submitted, then stop the writer."""
        try:
            if self.proc.poll() is None:
                deadline = time.monotonic() + timeout
                while self.confirmed < self.submitted and time.monotonic() < deadline:
                    if self.sock.poll(100):
                        self.poll_confirmed()
                    else:
                        self.check_alive()
                self.sock.send(STOP)
                self.proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, WriterError) as e:
            log.error("store writer did not stop cleanly: %s", e)
            self.proc.kill()
        finally:
            self.sock.close()
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
                self._confirmation(frame)  # raises on an error frame
            self.check_alive()
        self.proc.kill()
        raise WriterError(f"store writer sent no {what!r} within {timeout:.0f}s")

    @staticmethod
    def _confirmation(frame: bytes) -> int:
        if frame[:1] == DONE and len(frame) == 9:
            return int.from_bytes(frame[1:], "big")
        raise WriterError(f"store writer failed: {frame[1:].decode(errors='replace')}"[:2000])


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the engine dies, however it dies."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def serve(endpoint: str, store_cfg: StoreSection, parent: int) -> int:
    """The writer's loop: take every batch waiting, commit them as one, confirm the last."""
    from engine.store import open_store

    # Below the engine: on a busy host the decision path runs first; the writer keeps up in the gaps
    # (measured on 2 cores: ~5% more throughput than at equal priority).
    os.nice(WRITER_NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when the writer stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = zmq.Context.instance().socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(endpoint)
    try:
        store = open_store(store_cfg, writer=True)
    except Exception as e:  # noqa: BLE001 - reported to the engine, which fails its start with it
        sock.send(FAILED + f"cannot open the store: {e}".encode())
        return 1
    checkpointer = store.checkpointer() if hasattr(store, "checkpointer") else None
    if checkpointer is not None:
        checkpointer.start()
    sock.send(READY)
    commits = 0
    try:
        while True:
            if not sock.poll(1000):
                if os.getppid() != parent:
                    return 0  # the engine is gone: nothing unconfirmed was answered
                continue
            frames = [sock.recv()]
            while len(frames) < MAX_GROUP:
                try:
                    frames.append(sock.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
            stop = frames[-1] == STOP
            jobs = [_dec_job.decode(f) for f in frames if f != STOP]
            if jobs:
                batch = jobs[0][1]
                for _, later in jobs[1:]:
                    batch.extend(later)
                try:
                    store.commit(batch)
                except Exception as e:  # noqa: BLE001 - the engine must hear of it and stop
                    log.exception("commit failed")
                    sock.send(FAILED + f"{type(e).__name__}: {e}"[:2000].encode())
                    return 1
                sock.send(DONE + jobs[-1][0].to_bytes(8, "big"))
                commits += 1
                if checkpointer is not None:
                    if checkpointer.done.is_set():  # the rest in line: the next commit restarts the WAL
                        checkpointer.done.clear()
                        store.checkpoint("PASSIVE")
                    elif commits % CHECKPOINT_EVERY == 0:
                        checkpointer.request()
            if stop:
                return 0
    finally:
        if checkpointer is not None:
            checkpointer.stop()
        store.close()
        sock.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    endpoint, store_json, parent = argv
    return serve(endpoint, msgspec.json.decode(store_json, type=StoreSection), int(parent))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
