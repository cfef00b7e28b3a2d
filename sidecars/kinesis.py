"""`wojak sidecar kinesis`: orders from a Kinesis data stream, one consumer per shard, with durable
checkpoints kept in the engine's store.

Settings (environment), besides WOJAK_ENGINE_ENDPOINT, WOJAK_WINDOW, WOJAK_METRICS_PORT and the
WOJAK_AWS_* of sidecars/aws_common.py:

    WOJAK_KINESIS_STREAM             the stream's name (required)
    WOJAK_KINESIS_CHECKPOINT_PREFIX  checkpoint key prefix (default "kinesis:<stream>"); two sidecar
                                     deployments with different prefixes consume independently
    WOJAK_KINESIS_START              where a root shard without a checkpoint starts: TRIM_HORIZON
                                     (default) or LATEST. Child shards always start at TRIM_HORIZON.
    WOJAK_KINESIS_DLQ_URL            SQS queue for malformed records (optional)
    WOJAK_KINESIS_MAX_RECORDS        records per GetRecords (default 1000, at most 10000)
    WOJAK_KINESIS_IDLE_POLL_S        pause before polling a shard that returned nothing (default 0.25;
                                     Kinesis allows 5 GetRecords per shard per second)
    WOJAK_KINESIS_SHARD_REFRESH_S    how often the shard list is re-read for resharding (default 10)
    WOJAK_KINESIS_CHECKPOINT_EVERY_S minimum time between checkpoint writes per shard (default 0.5)

How a record is settled. Kinesis records cannot be acknowledged one by one, only passed: so, per
shard, the sidecar tracks the records it handed out in stream order and the highest sequence number
below which every record is answered, and checkpoints that (request `set_checkpoint`, key
"<prefix>:<shard id>"; the engine answers after its store committed it). A restart resumes
AFTER_SEQUENCE_NUMBER of the checkpoint; records answered after the last checkpoint are read again
and answered by the engine from its store (idempotent by client_order_id / record id).
- requeue (no decision for a record): the shard seeks back - a new iterator AT_SEQUENCE_NUMBER of
  its oldest unanswered record - and reads again from there; answers still arriving for the records
  it had handed out after it are ignored (those records come again).
- malformed (REJECTED/SCHEMA): with WOJAK_KINESIS_DLQ_URL the record goes there as JSON
  {"stream", "shard_id", "sequence_number", "partition_key", "data_base64", "reason"} with the
  message attribute `wojak-reason`; without it the engine's recorded decision (keyed by the record's
  id) is the only trace. Either way the shard moves on.
- ordering: a shard's records go to the engine in stream order and the engine decides them in that
  order. (A record the engine could not decide is re-read after later ones were decided.)
- ExpiredIteratorException: a new iterator after the last record read. Throughput exceeded or other
  client errors: that shard backs off, the others go on.
- resharding: the shard list is re-read every WOJAK_KINESIS_SHARD_REFRESH_S. A closed shard read to
  its end (NextShardIterator null) and fully answered is checkpointed "SHARD_END"; a child shard
  starts only when all its parents are SHARD_END, so a key's records stay in order across a split
  or merge. (moto moves a closed shard's records to its children; a closed shard that reads empty
  and is not behind is treated as ended, which is also true on AWS.)
- Ticks: a record whose JSON says "kind": "tick". Several orders in one record: a JSON array.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from engine.config import Config
from sidecars import aws_common
from sidecars.payload import split_parts
from sidecars.link import EngineLink
from sidecars.runtime import Message, Source
from sidecars.settings import SettingsError, engine_endpoint, env

log = logging.getLogger("wojak.sidecar.kinesis")

SHARD_END = "SHARD_END"
REASON_ATTR = "wojak-reason"


class EngineCheckpoints:
    """A source's durable positions in the engine's store, through its own EngineLink."""

    def __init__(self, link: EngineLink, timeout_s: float = 2.0) -> None:
        self.link = link
        self.timeout_s = timeout_s

    def get(self, key: str) -> str | None:
        resp = self.link.request("get_checkpoint", {"key": key}, self.timeout_s)
        if not resp.ok:
            raise RuntimeError(f"get_checkpoint {key}: {resp.error}")
        return resp.data

    def set(self, key: str, value: str) -> None:
        resp = self.link.request("set_checkpoint", {"key": key, "value": value}, self.timeout_s)
        if not resp.ok:
            raise RuntimeError(f"set_checkpoint {key}: {resp.error}")

    def close(self) -> None:
        self.link.close()


@dataclass(slots=True)
class Position:
    """A Message's `handle`: where the record is, and which read of its shard handed it out."""

    shard_id: str
    generation: int
    sequence_number: str
    partition_key: str


@dataclass
class _Shard:
    shard_id: str
    parents: tuple[str, ...]
    closed: bool
    state: str = "waiting"  # waiting (for its parents) -> reading -> finished (SHARD_END checkpointed)
    checkpoint: str | None = None  # the durable value in the engine's store
    iterator: str | None = None
    start: tuple[str, str | None] = ("TRIM_HORIZON", None)  # where a fresh iterator starts
    generation: int = 0
    fetched_upto: str | None = None  # the last record read from Kinesis
    answered_upto: str | None = None  # every record up to here is answered
    outstanding: OrderedDict = field(default_factory=OrderedDict)  # seq -> answered?, in stream order
    buffer: deque = field(default_factory=deque)  # records read, not yet handed out
    ended: bool = False  # read to the end of a closed shard
    next_poll: float = 0.0
    next_save: float = 0.0


def record_id(stream: str, shard_id: str, seq: str) -> str:
    """A stable id for a record (keys the engine's decision for garbage; re-reads map to it)."""
    return "k" + hashlib.blake2b(f"{stream}/{shard_id}/{seq}".encode(), digest_size=15).hexdigest()


class KinesisSource(Source):
    name = "kinesis"

    def __init__(self, kinesis: Any, stream: str, checkpoints: EngineCheckpoints, prefix: str | None = None,
                 start: str = "TRIM_HORIZON", dlq_url: str | None = None, sqs: Any = None, max_records: int = 1000,
                 idle_poll_s: float = 0.25, refresh_s: float = 10.0, checkpoint_every_s: float = 0.5) -> None:
        if start not in ("TRIM_HORIZON", "LATEST"):
            raise SettingsError(f"$WOJAK_KINESIS_START={start!r}: expected TRIM_HORIZON or LATEST")
        self.kinesis = kinesis
        self.stream = stream
        self.checkpoints = checkpoints
        self.prefix = prefix or f"kinesis:{stream}"
        self.start_type = start
        self.dlq_url = dlq_url
        self.sqs = sqs
        self.max_records = max(1, min(10_000, max_records))
        self.idle_poll_s = idle_poll_s
        self.refresh_s = refresh_s
        self.checkpoint_every_s = checkpoint_every_s
        self.shards: dict[str, _Shard] = {}
        self._next_refresh = 0.0
        self._rr = 0  # round-robin start over shards

    @classmethod
    def from_env(cls, cfg: Config) -> "KinesisSource":
        stream = env("WOJAK_KINESIS_STREAM", required=True)
        kinesis = aws_common.client("kinesis")
        kinesis.describe_stream_summary(StreamName=stream)  # fail at start, clearly, if it is not there
        dlq = env("WOJAK_KINESIS_DLQ_URL")
        return cls(kinesis, stream, EngineCheckpoints(EngineLink(engine_endpoint(cfg))),
                   env("WOJAK_KINESIS_CHECKPOINT_PREFIX"), env("WOJAK_KINESIS_START", "TRIM_HORIZON").upper(), dlq,
                   aws_common.client("sqs") if dlq else None, env("WOJAK_KINESIS_MAX_RECORDS", 1000, int),
                   env("WOJAK_KINESIS_IDLE_POLL_S", 0.25, float), env("WOJAK_KINESIS_SHARD_REFRESH_S", 10.0, float),
                   env("WOJAK_KINESIS_CHECKPOINT_EVERY_S", 0.5, float))

    def key(self, shard_id: str) -> str:
        return f"{self.prefix}:{shard_id}"

    # -- receiving ------------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() >= self._next_refresh:
                self._refresh()
            out: list[Message] = []
            reading = [s for s in self.shards.values() if s.state == "reading"]
            self._rr += 1
            for i in range(len(reading)):
                shard = reading[(self._rr + i) % len(reading)]
                if not shard.buffer and not shard.ended and time.monotonic() >= shard.next_poll:
                    self._fetch(shard)
                while shard.buffer and len(out) < max_messages:
                    m = shard.buffer.popleft()
                    shard.outstanding[m.handle.sequence_number] = False
                    out.append(m)
            now = time.monotonic()
            if out or now >= deadline:
                return out
            polls = [s.next_poll for s in reading if not s.ended] or [now + 0.05]
            time.sleep(max(0.005, min(deadline, self._next_refresh, min(polls)) - now))

    def _fetch(self, shard: _Shard) -> None:
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(shard.shard_id, *shard.start)
            r = self.kinesis.get_records(ShardIterator=shard.iterator, Limit=self.max_records)
        except Exception as e:
            code = aws_common.error_code(e)
            if code == "ExpiredIteratorException":
                log.info("%s iterator expired; reopening after %s", shard.shard_id, shard.fetched_upto)
                shard.iterator = None
                if shard.fetched_upto is not None:
                    shard.start = ("AFTER_SEQUENCE_NUMBER", shard.fetched_upto)
                return
            if code == "ResourceNotFoundException":
                log.warning("%s no longer exists (expired past retention?): %s", shard.shard_id, e)
                shard.state = "finished"
                self._next_refresh = 0.0
                return
            log.warning("%s get_records failed (%s), backing off: %s", shard.shard_id, code or "error", e)
            shard.iterator = None if code == "InvalidArgumentException" else shard.iterator
            shard.next_poll = time.monotonic() + 1.0
            return
        records = r.get("Records", [])
        for rec in records:
            seq = rec["SequenceNumber"]
            data: bytes = rec["Data"]
            pos = Position(shard.shard_id, shard.generation, seq, rec.get("PartitionKey", ""))
            shard.buffer.append(Message(data, record_id(self.stream, shard.shard_id, seq), pos,
                                        parts=split_parts(data)))
            shard.fetched_upto = seq
        if shard.fetched_upto is not None:
            shard.start = ("AFTER_SEQUENCE_NUMBER", shard.fetched_upto)
        shard.iterator = r.get("NextShardIterator")
        if shard.iterator is None or (not records and shard.closed and not r.get("MillisBehindLatest")):
            shard.ended = True
            log.info("%s read to its end at %s", shard.shard_id, shard.fetched_upto)
        shard.next_poll = time.monotonic() + (0.0 if records else self.idle_poll_s)

    def _iterator(self, shard_id: str, kind: str, seq: str | None) -> str:
        kw: dict[str, Any] = dict(StreamName=self.stream, ShardId=shard_id, ShardIteratorType=kind)
        if seq is not None:
            kw["StartingSequenceNumber"] = seq
        return self.kinesis.get_shard_iterator(**kw)["ShardIterator"]

    # -- shards and resharding -------------------------------------------------------------------
    def _list_shards(self) -> list[dict]:
        shards, kw = [], {"StreamName": self.stream}
        while True:
            r = self.kinesis.list_shards(**kw)
            shards += r.get("Shards", [])
            if not r.get("NextToken"):
                return shards
            kw = {"NextToken": r["NextToken"]}

    def _refresh(self) -> None:
        self._next_refresh = time.monotonic() + self.refresh_s
        for s in self._list_shards():
            sid = s["ShardId"]
            closed = "EndingSequenceNumber" in s.get("SequenceNumberRange", {})
            if sid in self.shards:
                self.shards[sid].closed = closed
                continue
            parents = tuple(p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p)
            self.shards[sid] = _Shard(sid, parents, closed)
        progress = True
        while progress:  # a chain of finished shards may unblock several generations at once
            progress = False
            for shard in self.shards.values():
                if shard.state != "waiting" or not self._parents_done(shard):
                    continue
                try:
                    cp = self.checkpoints.get(self.key(shard.shard_id))
                except Exception as e:  # engine unreachable: try again soon
                    log.warning("checkpoint of %s unavailable: %s", shard.shard_id, e)
                    self._next_refresh = time.monotonic() + 1.0
                    return
                self._open(shard, cp)
                progress = progress or shard.state == "finished"

    def _parents_done(self, shard: _Shard) -> bool:
        return all(p not in self.shards or self.shards[p].state == "finished" for p in shard.parents)

    def _open(self, shard: _Shard, cp: str | None) -> None:
        shard.checkpoint = cp
        if cp == SHARD_END:
            shard.state = "finished"
            return
        if cp is not None:
            shard.start = ("AFTER_SEQUENCE_NUMBER", cp)
            shard.answered_upto = shard.fetched_upto = cp
        else:
            shard.start = ("TRIM_HORIZON", None) if shard.parents else (self.start_type, None)
        shard.state = "reading"
        log.info("%s reading from %s %s", shard.shard_id, *shard.start)

    # -- settling -------------------------------------------------------------------------------
    def _current(self, msg: Message) -> _Shard | None:
        pos: Position = msg.handle
        shard = self.shards.get(pos.shard_id)
        if shard is None or shard.generation != pos.generation or pos.sequence_number not in shard.outstanding:
            return None  # handed out before a seek back: it is read again
        return shard

    def ack(self, msg: Message, decision: dict) -> None:
        shard = self._current(msg)
        if shard is None:
            return
        shard.outstanding[msg.handle.sequence_number] = True
        while shard.outstanding:
            seq, answered = next(iter(shard.outstanding.items()))
            if not answered:
                break
            shard.outstanding.popitem(last=False)
            shard.answered_upto = seq

    def requeue(self, msg: Message, why: str) -> None:
        shard = self._current(msg)
        if shard is None:
            return
        first_unanswered = next(iter(shard.outstanding))
        log.info("%s seeks back to %s: %s", shard.shard_id, first_unanswered, why)
        shard.generation += 1
        shard.outstanding.clear()
        shard.buffer.clear()
        shard.ended = False
        shard.iterator = None
        shard.start = ("AT_SEQUENCE_NUMBER", first_unanswered)
        shard.fetched_upto = shard.answered_upto
        shard.next_poll = time.monotonic() + 0.2  # do not spin on a message the engine keeps deferring

    def dead_letter(self, msg: Message, reason: str, decision: dict) -> None:
        pos: Position = msg.handle
        if self._current(msg) is None:
            return
        if self.dlq_url:
            body = {"stream": self.stream, "shard_id": pos.shard_id, "sequence_number": pos.sequence_number,
                    "partition_key": pos.partition_key, "data_base64": base64.b64encode(msg.payload).decode(),
                    "reason": reason}
            try:
                self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=json.dumps(body), MessageAttributes={
                    REASON_ATTR: {"DataType": "String", "StringValue": reason[:1000] or "?"}})
            except Exception as e:
                log.warning("dead-letter of %s/%s failed, reading it again: %s", pos.shard_id, pos.sequence_number, e)
                self.requeue(msg, "dead-letter queue unavailable")
                return
        log.warning("%s/%s dead-lettered: %s", pos.shard_id, pos.sequence_number, reason)
        self.ack(msg, decision)

    # -- checkpoints ----------------------------------------------------------------------------
    def heartbeat(self, in_flight: list[Message]) -> None:
        self._save(force=False)

    def _save(self, force: bool) -> None:
        now = time.monotonic()
        for shard in self.shards.values():
            if shard.state != "reading" or (not force and now < shard.next_save):
                continue
            try:
                if shard.ended and not shard.buffer and not shard.outstanding:
                    self.checkpoints.set(self.key(shard.shard_id), SHARD_END)
                    shard.checkpoint, shard.state = SHARD_END, "finished"
                    self._next_refresh = 0.0  # its children may start now
                    log.info("%s finished; checkpointed %s", shard.shard_id, SHARD_END)
                elif shard.answered_upto is not None and shard.answered_upto != shard.checkpoint:
                    self.checkpoints.set(self.key(shard.shard_id), shard.answered_upto)
                    shard.checkpoint = shard.answered_upto
                shard.next_save = now + self.checkpoint_every_s
            except Exception as e:  # the engine is away: keep reading, save later (re-reads are safe)
                log.warning("checkpoint of %s not saved: %s", shard.shard_id, e)
                shard.next_save = now + 1.0

    def close(self) -> None:
        try:
            self._save(force=True)
        finally:
            self.checkpoints.close()


def main(cfg: Config) -> int:
    return aws_common.run(cfg, "kinesis", lambda: KinesisSource.from_env(cfg), receive_max=100)
