"""The intent log: the SQLite store's record of orders about to reach the broker.

Every batch's intents are one record, written and `fdatasync`ed before the broker is called. The
log is a few preallocated segment files, overwritten in place and reused: a write into an existing,
fully written file changes no metadata, so the sync is one device flush (about half the cost of a
SQLite commit, and none of its page writes). A segment is reused once every intent in it is
resolved (its decision committed, or dropped by reconciliation); an intent still pending when its
segment is needed again (broker unreachable for long) is first copied forward into a new segment.

Record: u32 length, u32 crc32, u64 sequence, msgpack `Record` (new intents, and the ids resolved
since the previous record). A scan reads every segment, stops in each at the first record that does
not check out (the end of what was written, or a torn write), and applies the records in sequence
order. A resolution lost with a reused segment is harmless by design: the store tells resolved from
pending by its decisions, and an intent that was dropped (no decision; the broker never had it)
comes back as pending only to be dropped again by the next reconciliation - the broker is asked,
never sent to blindly.
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


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Record)


class _Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        self.ids: set[str] = set()  # unresolved intents recorded here

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

    def __init__(self, directory: str | Path, segments: int = 2) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for n in range(segments):
            _create(self.dir / f"{n:04d}.log")
        self.segments = [_Segment(p) for p in sorted(self.dir.glob("*.log"))]
        self.pending: dict[str, Intent] = {}
        self._where: dict[str, _Segment] = {}
        self._unwritten: list[str] = []  # resolved since the last record
        found = sorted(((seq, n, rec) for n, seg in enumerate(self.segments) for seq, rec in seg.records()),
                       key=lambda r: r[:2])
        for _, n, rec in found:
            self._add(rec.intents, self.segments[n])
            self.resolve(rec.resolved)
        self._unwritten.clear()
        self.seq = found[-1][0] if found else 0
        # The first append picks a segment with nothing pending (after the owner has told the log
        # which intents are decided): where the last writer stopped is not worth finding.
        self.active: _Segment | None = None
        self.offset = 0

    # -- writing ------------------------------------------------------------------------------
    def append(self, intents: Sequence[Intent], resolved: Sequence[str] = ()) -> None:
        """Forget the resolved ids, then record the intents durably (fdatasync) before returning."""
        self.resolve(resolved)
        if intents:
            self._write(list(intents))

    def resolve(self, client_order_ids: Iterable[str], durably: bool = False) -> None:
        """Decided or dropped: no longer pending. Written with the next record, or now if durably."""
        pending, where, unwritten = self.pending, self._where, self._unwritten
        for coid in client_order_ids:
            if pending.pop(coid, None) is not None:
                where.pop(coid).ids.discard(coid)
                unwritten.append(coid)
        if durably and unwritten:
            self._write([])

    def close(self) -> None:
        for seg in self.segments:
            os.close(seg.fd)

    # -- internals ----------------------------------------------------------------------------
    def _add(self, intents: list[Intent], seg: _Segment) -> None:
        pending, where = self.pending, self._where
        for i in intents:
            if i.client_order_id in pending:  # a copy carried forward
                where.pop(i.client_order_id).ids.discard(i.client_order_id)
            pending[i.client_order_id] = i
            self._where[i.client_order_id] = seg
            seg.ids.add(i.client_order_id)

    def _write(self, intents: list[Intent]) -> None:
        body = _enc.encode(Record(intents, self._unwritten))
        need = 2 * _HEAD.size + len(body)
        if need > SEGMENT_BYTES:
            raise ValueError(f"an intent record of {len(body)} bytes exceeds the segment size")
        if self.active is None or self.offset + need > SEGMENT_BYTES:
            self._rotate()  # may write a record of its own first, which takes the resolutions along
            body = _enc.encode(Record(intents, self._unwritten))
        self.seq += 1
        frame = _HEAD.pack(len(body), zlib.crc32(body), self.seq) + body
        # The record plus an empty header after it, so a scan stops here and not at stale records.
        seg = self.active
        os.pwrite(seg.fd, frame + bytes(_HEAD.size), self.offset)
        os.fdatasync(seg.fd)
        self.offset += len(frame)
        self._unwritten = []
        self._add(intents, seg)

    def _rotate(self) -> None:
        """Write on at the top of a segment with nothing pending in it.

        The segment just left keeps its in-flight intents (resolved within milliseconds). Any other
        segment still holding pending intents (a broker unreachable for a whole lap) cannot be
        reused: a new segment is made, and those intents are copied into it first."""
        old = self.active
        nxt = next((s for s in self.segments if s is not old and not s.ids), None)
        if nxt is None:
            nxt = _Segment(_create(self.dir / f"{len(self.segments):04d}.log"))
            self.segments.append(nxt)
        carry = [self.pending[c] for s in self.segments if s is not old and s is not nxt for c in s.ids]
        self.active, self.offset = nxt, 0
        os.pwrite(nxt.fd, bytes(_HEAD.size), 0)  # what the segment held before is history
        if carry:
            self._write(carry)


def _create(path: Path) -> Path:
    """A segment written in full once, so later writes overwrite allocated blocks (no metadata)."""
    if path.exists() and path.stat().st_size == SEGMENT_BYTES:
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(bytes(SEGMENT_BYTES))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path
