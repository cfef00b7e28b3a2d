"""The writer lease: one engine writes a store's scope at a time; any other stands by.

The engine's book (positions, exposure, rate windows) lives in its memory and is written to the
store as absolute values, so two engines writing one scope would overwrite each other's positions
and share one redo journal. SQLite's store has a file lock a process holds while it lives
(`server.lock_store`). A shared store has no such thing, so an engine that may share its scope
with others (the platform runs one on every app node) holds a lease:

- **acquire**: create the lease record, which expires on its own after `ttl_s` (the store's clock,
  not ours: no two hosts' clocks are compared). It exists: another engine holds it; try again.
- **keep**: every `ttl_s / 3`, replace it if it is still ours (compare-and-swap), with a fresh
  expiry. Ours no more (replaced, or expired and gone): lost. A renewal the store does not answer
  is tried again each second.
- **fence itself**: if `ttl_s / 2` has passed since the last renewal that was *sent* (the store
  counts its expiry from when it applied it, later), the holder stops, before the lease can lapse
  and another engine take over. The engine checks at least once a second, except while inside a
  store operation (bounded by the SDK's 10 s timeout): it stops by `ttl_s / 2 + 10 s` after its
  last renewal, and a write it sent by then lands within another 10 s. Hence `ttl_s` of at least
  45 s (default 60): the old holder's last write lands before the lease lapses.
- **release**: on a clean stop (SIGTERM: a spot reclaim's notice), remove it if still ours, so a
  standby takes over within a second instead of at the expiry.

`WriterLease` is that protocol over a `LeaseRecord`, the store's three operations on one record
(engine/store/couchbase.py has the Couchbase one: a document with an expiry, CAS, durable writes).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Protocol

log = logging.getLogger("wojak.lease")


class LeaseLost(RuntimeError):
    """This engine no longer holds (or can no longer prove it holds) the writer lease: it must stop."""


class LeaseUnavailable(RuntimeError):
    """The store did not answer a lease operation (the protocol tries again)."""


class LeaseRecord(Protocol):
    def create(self, holder: str, ttl_s: int) -> object | None:
        """Create the record, expiring after ttl_s: its version (CAS), or None if it exists."""

    def replace(self, version: object, holder: str, ttl_s: int) -> object:
        """Replace it if still at `version`, with a fresh expiry: the new version. Raises LeaseLost
        if it is gone or another's."""

    def remove(self, version: object) -> None:
        """Remove it if still at `version`; anything else is left as it is."""

    def holder(self) -> str | None:
        """Who holds it now (for the logs), or None."""


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class WriterLease:
    def __init__(self, record: LeaseRecord, ttl_s: int, holder: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.record = record
        self.ttl_s = ttl_s
        self.holder = holder or this_process()
        self.clock = clock
        self.version: object | None = None
        self.renewed_at = 0.0  # when the last renewal that succeeded was sent (clock)
        self._retry_at = 0.0  # after a renewal the store did not answer: not before this

    @property
    def held(self) -> bool:
        return self.version is not None

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it. Raises LeaseUnavailable if the store does not answer."""
        sent = self.clock()
        version = self.record.create(self.holder, self.ttl_s)
        if version is None:
            return False
        self.version, self.renewed_at = version, sent
        log.info("writer lease taken by %s (ttl %ds)", self.holder, self.ttl_s)
        return True

    def keep(self) -> None:
        """Renew when due (call it at least once a second). Raises LeaseLost when the lease is
        another's, or has gone unrenewed for half its time to live."""
        if self.version is None:
            raise LeaseLost("the writer lease is not held")
        now = self.clock()
        if now - self.renewed_at > self.ttl_s / 2:
            self.version = None
            raise LeaseLost(f"the writer lease was not renewed for {now - self.renewed_at:.1f}s (more than half its "
                            f"{self.ttl_s}s): stopping before another engine may take over")
        if now - self.renewed_at < self.ttl_s / 3 or now < self._retry_at:
            return
        try:
            self.version = self.record.replace(self.version, self.holder, self.ttl_s)
        except LeaseUnavailable as e:
            self._retry_at = now + 1.0
            log.warning("writer lease not renewed (tried again in a second): %s", e)
            return
        except LeaseLost:
            self.version = None
            raise
        self.renewed_at = now

    def release(self) -> None:
        """Hand the lease over at once (a clean stop). Never raises: it expires anyway."""
        version, self.version = self.version, None
        if version is None:
            return
        try:
            self.record.remove(version)
            log.info("writer lease released by %s", self.holder)
        except Exception as e:  # noqa: BLE001 - it lapses at its expiry instead
            log.warning("writer lease not released (it lapses in %ds): %s", self.ttl_s, e)
