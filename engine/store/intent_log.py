"""The intent log: the SQLite store's record of orders about to reach the broker.

Every batch's intents are one record, written and `fdatasync`ed before the broker is called. The
log is two preallocated segment files, overwritten in place in turn: a write into an existing,
fully written file changes no metadata, so the sync is one device flush (about half the cost of a
SQLite commit, and none of its page writes).

Record: u32 length, u32 crc32, u64 sequence, msgpack `Record`: the batch's intents and the ids
resolved since the previous record (decided, or dropped by reconciliation). A segment starts with a
*full* record: every intent pending at that moment. So the segment written before it is history and
may be overwritten next, and a scan needs only the newest full record and what follows it (in
sequence order): it stops in each segment at the first record that does not check out (the end of
what was written, or a torn write), and what it finds is exactly what was pending.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import msgspec

from engine.store.base import Intent

SEGMENT_BYTES = 4 << 20
_HEAD = struct.Struct("<IIQ")  # body length, crc32 of the body, sequence


class Record(msgspec.Struct, omit_defaults=True):
    intents: list[Intent] = []
    resolved: list[str] = []
    full: bool = False  # intents = everything pending: earlier records no longer matter


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Record)


class _Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR)

    def records(self) -> Iterable[tuple[int, Record]]:
        data = os.pread(self.fd, SEGMENT_BYTES, 0)
        off = 0
        while off + _HEAD.size <= len(data):
            size, crc, seq = _HEAD.unpack_from(data, off)
            body = data[off + _HEAD.size: off + _HEAD.size + size]
            if size == 0 or len(body) != size or zlib.crc32(body) != crc:
                return
            try:
                yield seq, _dec.decode(body)
            except msgspec.DecodeError:
                return
            off += _HEAD.size + size


class IntentLog:
    """Owned by one writer (the engine); other processes may open it to read what is pending."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segments = [_Segment(preallocate(self.dir / f"{n}.log", SEGMENT_BYTES)) for n in range(2)]
        self.pending: dict[str, Intent] = {}
        self._unwritten: list[str] = []  # resolved since the last record
        found = sorted((seq, n, rec) for n, seg in enumerate(self.segments) for seq, rec in seg.records())
        base = max((seq for seq, _, rec in found if rec.full), default=0)
        for seq, _, rec in found:
            if seq >= base:
                self._apply(rec)
        self._unwritten.clear()
        self.seq = found[-1][0] if found else 0
        # The first append starts a segment, after the owner has said which intents are decided:
        # where the last writer stopped is not worth finding.
        self.active: int | None = None
        self.offset = 0

    def append(self, intents: Sequence[Intent], resolved: Sequence[str] = ()) -> None:
        """Forget the resolved ids, then record the intents durably (fdatasync) before returning."""
        self.resolve(resolved)
        if intents:
            self._write(Record(list(intents), self._unwritten))

    def resolve(self, client_order_ids: Iterable[str], durably: bool = False) -> None:
        """Decided or dropped: no longer pending. Written with the next record, or now if durably."""
        pending, unwritten = self.pending, self._unwritten
        for coid in client_order_ids:
            if pending.pop(coid, None) is not None:
                unwritten.append(coid)
        if durably and unwritten:
            self._write(Record([], unwritten))

    def close(self) -> None:
        for seg in self.segments:
            os.close(seg.fd)

    def _apply(self, rec: Record) -> None:
        if rec.full:
            self.pending = {}
        for i in rec.intents:
            self.pending[i.client_order_id] = i
        for coid in rec.resolved:
            self.pending.pop(coid, None)

    def _write(self, rec: Record) -> None:
        body = _enc.encode(rec)
        if self.active is None or self.offset + len(body) + 2 * _HEAD.size > SEGMENT_BYTES:
            self._start_segment()  # its full record already leaves out what was resolved
            rec = Record(rec.intents)
            body = _enc.encode(rec)
        if len(body) + 2 * _HEAD.size > SEGMENT_BYTES - self.offset:
            raise ValueError(f"an intent record of {len(body)} bytes exceeds the segment size")
        self._put(body)
        self._unwritten = []
        self._apply(rec)

    def _start_segment(self) -> None:
        """Overwrite the other segment, from the top, starting with everything pending."""
        self.active = 0 if self.active is None else 1 - self.active
        self.offset = 0
        self._put(_enc.encode(Record(list(self.pending.values()), full=True)))
        self._unwritten = []

    def _put(self, body: bytes) -> None:
        """One record and an empty header after it (so a scan stops there), synced."""
        self.seq += 1
        fd = self.segments[self.active].fd
        os.pwrite(fd, _HEAD.pack(len(body), zlib.crc32(body), self.seq) + body + bytes(_HEAD.size), self.offset)
        os.fdatasync(fd)
        self.offset += _HEAD.size + len(body)


def preallocate(path: Path, size: int) -> Path:
    """A segment file written in full once (zeros, synced, its name too), so later writes overwrite
    allocated blocks: no metadata changes, and a sync is one device flush."""
    if path.exists() and path.stat().st_size == size:
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(bytes(size))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path
