"""An in-memory lease record with the semantics of the Couchbase one (engine/store/couchbase.py:
insert-if-absent with an expiry, replace and remove by CAS), on a clock the tests control or on real
time. No Couchbase cluster can run here; the real record runs in the store contract suite when
COUCHBASE_CONNSTR is set."""
from __future__ import annotations

import itertools
import threading
import time
from typing import Callable

from engine.store.lease import LeaseLost, LeaseUnavailable


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


class MemoryLeaseRecord:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.doc: tuple[str, int, float] | None = None  # (holder, cas, expires at)
        self.unavailable = False  # the store does not answer
        self._cas = itertools.count(1)
        self._lock = threading.Lock()

    def _live(self) -> tuple[str, int, float] | None:
        if self.doc is not None and self.clock() >= self.doc[2]:
            self.doc = None  # expired: gone, as a document past its expiry is
        return self.doc

    def _answer(self, what: str) -> None:
        if self.unavailable:
            raise LeaseUnavailable(f"{what}: no answer in time")

    def create(self, holder: str, ttl_s: int) -> object | None:
        with self._lock:
            self._answer("take")
            if self._live() is not None:
                return None
            self.doc = (holder, next(self._cas), self.clock() + ttl_s)
            return self.doc[1]

    def replace(self, version: object, holder: str, ttl_s: int) -> object:
        with self._lock:
            self._answer("renew")
            doc = self._live()
            if doc is None or doc[1] != version:
                raise LeaseLost(f"the writer lease is another engine's now ({doc[0] if doc else 'lapsed'})")
            self.doc = (holder, next(self._cas), self.clock() + ttl_s)
            return self.doc[1]

    def remove(self, version: object) -> None:
        with self._lock:
            self._answer("remove")
            doc = self._live()
            if doc is not None and doc[1] == version:
                self.doc = None

    def holder(self) -> str | None:
        with self._lock:
            doc = self._live()
            return doc[0] if doc else None

    def steal(self, holder: str = "intruder", ttl_s: int = 60) -> None:
        """Another engine holds it now (what an operator's mistake or a partition can make)."""
        with self._lock:
            self.doc = (holder, next(self._cas), self.clock() + ttl_s)
