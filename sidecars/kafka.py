"""Kafka source: a consumer-group member that commits only what the engine has answered.

Contract at the broker (plain Kafka protocol via confluent-kafka, all on the Runner's thread):

- offsets are committed by hand, never automatically, and for each partition only up to the highest
  *contiguous* answered offset + 1: message 7 answered before message 5 moves nothing until 5 is;
- no decision (engine down, PENDING, sidecar draining) = "requeue": the partition is sought back to
  that offset, so the broker delivers it again; messages after it that are in flight or already
  answered are skipped when they come round again, and nothing past it is ever committed;
- garbage (REJECTED with SCHEMA / DUPLICATE_ID_MISMATCH, recorded by the engine) is produced to the
  dead-letter topic with the reason in the `x-wojak-reason` header (idempotent producer, acks=all,
  the sidecar waits for the delivery report) and only then counts as answered. If that produce
  fails the message is requeued instead;
- backpressure: when the window of unanswered messages is full and the engine is stalling (the
  oldest has waited longer than WOJAK_KAFKA_PAUSE_AFTER_MS) every assigned partition is paused, so
  the client stops fetching, and resumed when half of the window has been answered. A full window
  alone is the normal state of a backlog: pausing then would only drop and refetch the client's
  prefetched messages at every turn;
- rebalance: on revoke the contiguous answered offsets are committed synchronously and the in-flight
  state of those partitions is dropped (late answers for them are ignored); the new owner starts at
  the committed offset, and the engine's idempotency answers any redelivered order as a duplicate,
  so nothing is lost and nothing is executed twice. Lost partitions are dropped without a commit.

A message is an order, or a tick when it has the header `kind: tick` or comes from a tick topic (both
sent to the engine as kind "tick"), or when its JSON says "kind": "tick". A JSON array of orders is one message carrying several orders: its offset
counts as answered once every order in it is answered.

Settings (environment):
    WOJAK_KAFKA_BOOTSTRAP          bootstrap.servers, host:port[,host:port]          (required)
    WOJAK_KAFKA_TOPICS             comma-separated order topics (WOJAK_KAFKA_TOPIC also accepted) (required)
    WOJAK_KAFKA_TICK_TOPICS        comma-separated topics whose messages are all ticks  (optional)
    WOJAK_KAFKA_GROUP              consumer group id                                 (default wojak-sidecar)
    WOJAK_KAFKA_DLQ_TOPIC          dead-letter topic for every source topic          (default: <topic>.dlq)
    WOJAK_KAFKA_OFFSET_RESET       where a group with no committed offset starts: earliest|latest (default earliest)
    WOJAK_KAFKA_SESSION_TIMEOUT_MS session.timeout.ms                                (default 10000)
    WOJAK_KAFKA_HEARTBEAT_MS       heartbeat.interval.ms                             (default 1000)
    WOJAK_KAFKA_MAX_POLL_INTERVAL_MS  max.poll.interval.ms                           (default 300000)
    WOJAK_KAFKA_FETCH_WAIT_MS      fetch.wait.max.ms: how long the broker may hold a fetch (default 50);
                                   it bounds the cost of every resume after backpressure
    WOJAK_KAFKA_PAUSE_AFTER_MS     a full window older than this pauses the partitions (default 500)
    WOJAK_KAFKA_COMMIT_INTERVAL_MS how often answered offsets are committed (async)  (default 200)
    WOJAK_KAFKA_RECEIVE_MAX        messages handed to the engine link per turn       (default 500)
    WOJAK_KAFKA_CONFIG             JSON object of extra librdkafka properties for the consumer and
                                   the dead-letter producer (TLS, SASL, client.rack, ...)
plus the common WOJAK_ENGINE_ENDPOINT, WOJAK_WINDOW, WOJAK_METRICS_PORT (sidecars/settings.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from engine.config import Config
from sidecars.main import start
from sidecars.payload import shape
from sidecars.runtime import Message, Source
from sidecars.settings import SettingsError, env, window

log = logging.getLogger("wojak.sidecar.kafka")

REASON_HEADER = "x-wojak-reason"


def _topics(raw: str) -> tuple[str, ...]:
    out = tuple(t.strip() for t in raw.split(",") if t.strip())
    if not out:
        raise ValueError("expected at least one topic")
    return out


def _config(raw: str) -> dict:
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object of librdkafka properties")
    return obj


@dataclass(frozen=True)
class Settings:
    bootstrap: str
    topics: tuple[str, ...]
    tick_topics: tuple[str, ...]
    group: str
    dlq_topic: str | None
    offset_reset: str
    session_timeout_ms: int
    heartbeat_ms: int
    max_poll_interval_ms: int
    commit_interval_s: float
    fetch_wait_ms: int
    pause_after_s: float
    receive_max: int
    window: int
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        topics = env("WOJAK_KAFKA_TOPICS", None, _topics) or env("WOJAK_KAFKA_TOPIC", None, _topics)
        if not topics:
            raise SettingsError("$WOJAK_KAFKA_TOPICS is required")
        reset = env("WOJAK_KAFKA_OFFSET_RESET", "earliest")
        if reset not in ("earliest", "latest"):
            raise SettingsError(f"$WOJAK_KAFKA_OFFSET_RESET={reset!r}: expected earliest or latest")
        s = cls(bootstrap=env("WOJAK_KAFKA_BOOTSTRAP", required=True), topics=topics,
                tick_topics=env("WOJAK_KAFKA_TICK_TOPICS", (), _topics), group=env("WOJAK_KAFKA_GROUP", "wojak-sidecar"),
                dlq_topic=env("WOJAK_KAFKA_DLQ_TOPIC", None), offset_reset=reset,
                session_timeout_ms=env("WOJAK_KAFKA_SESSION_TIMEOUT_MS", 10_000, int),
                heartbeat_ms=env("WOJAK_KAFKA_HEARTBEAT_MS", 1_000, int),
                max_poll_interval_ms=env("WOJAK_KAFKA_MAX_POLL_INTERVAL_MS", 300_000, int),
                commit_interval_s=env("WOJAK_KAFKA_COMMIT_INTERVAL_MS", 200, int) / 1000,
                fetch_wait_ms=env("WOJAK_KAFKA_FETCH_WAIT_MS", 50, int),
                pause_after_s=env("WOJAK_KAFKA_PAUSE_AFTER_MS", 500, int) / 1000,
                receive_max=env("WOJAK_KAFKA_RECEIVE_MAX", 500, int), window=window(),
                extra=env("WOJAK_KAFKA_CONFIG", {}, _config))
        if s.receive_max < 1 or s.window < 1:
            raise SettingsError("$WOJAK_KAFKA_RECEIVE_MAX and $WOJAK_WINDOW must be >= 1")
        return s

    def dlq_for(self, topic: str) -> str:
        return self.dlq_topic or f"{topic}.dlq"


class OffsetTracker:
    """One partition's bookkeeping: which delivered offsets are in flight, which are answered, and
    the commit position (every offset below it is answered).

    Offsets arrive in increasing order, except when the partition is sought back after a requeue;
    then offsets already in flight or answered are refused, so each is handed to the engine once
    per delivery that needs an answer.
    """

    def __init__(self) -> None:
        self._answered: dict[int, bool] = {}  # delivered and not yet below `position`, in offset order
        self._in_flight: set[int] = set()
        self.position: int | None = None  # the offset to commit: all below it are answered

    def accept(self, offset: int) -> bool:
        """A delivery of `offset`: True if it must go to the engine, False if it is a repeat."""
        if self.position is None:
            self.position = offset
        if offset < self.position or offset in self._in_flight or self._answered.get(offset):
            return False
        if offset not in self._answered:
            if self._answered and offset < next(reversed(self._answered)):
                # Never happens with a well-behaved broker (offsets only grow); keep the order anyway.
                self._answered = dict(sorted({**self._answered, offset: False}.items()))
            else:
                self._answered[offset] = False
        self._in_flight.add(offset)
        return True

    def answered(self, offset: int) -> bool:
        """Mark an offset answered; True if the commit position moved."""
        self._in_flight.discard(offset)
        if offset not in self._answered:
            return False
        self._answered[offset] = True
        moved = False
        while self._answered:
            first = next(iter(self._answered))
            if not self._answered[first]:
                break
            del self._answered[first]
            self.position = first + 1
            moved = True
        return moved

    def requeued(self, offset: int) -> None:
        """No answer for `offset`: it must be delivered again (the caller seeks the partition back)."""
        self._in_flight.discard(offset)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)


@dataclass(eq=False)
class _Partition:
    topic: str
    partition: int
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    rewind: int | None = None  # seek here before the next consume
    committed: int = -1


@dataclass(slots=True)
class _Handle:
    part: _Partition
    offset: int
    key: bytes | None
    value: bytes
    headers: list


def message_id(topic: str, partition: int, offset: int) -> str:
    """Stable across redeliveries and consumers: where the message sits in the log."""
    mid = f"{topic}:{partition}:{offset}"
    return mid if len(mid) <= 64 else "kafka-" + hashlib.blake2b(mid.encode(), digest_size=12).hexdigest()


def _is_tick(headers: list | None) -> bool:
    return any(k == "kind" and v in (b"tick", "tick") for k, v in headers or ())


class KafkaSource(Source):
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._in_flight = 0
        self._paused = False
        self._last_commit = 0.0
        self._producer: Producer | None = None
        self.consumer = Consumer({
            **settings.extra,
            "bootstrap.servers": settings.bootstrap,
            "group.id": settings.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": settings.offset_reset,
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_ms,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            # A resumed partition refetches what pausing dropped: the broker's hold time is that stall.
            "fetch.wait.max.ms": settings.fetch_wait_ms,
            "on_commit": self._on_commit,
            "error_cb": lambda e: log.warning("kafka client: %s", e),
        })
        self.consumer.subscribe(list(settings.topics + settings.tick_topics), on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("consuming %s as group %s", ",".join(settings.topics + settings.tick_topics), settings.group)

    # -- rebalance (called inside consume(), on the Runner's thread) ------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._parts[(tp.topic, tp.partition)] = _Partition(tp.topic, tp.partition)
        self._paused = False  # a fresh assignment starts fetching; receive() pauses again if still full
        log.info("assigned %s", [f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [p for tp in partitions if (p := self._parts.get((tp.topic, tp.partition)))]
        try:
            self._commit(mine, asynchronous=False)
        except KafkaException as e:
            log.warning("commit on revoke failed (the next owner re-reads from the last commit): %s", e)
        self._drop(partitions)
        log.info("revoked %s", [f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop(partitions)  # another member may own them already: committing would be wrong
        log.warning("lost %s", [f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            p = self._parts.pop((tp.topic, tp.partition), None)
            if p is not None:
                self._in_flight -= p.tracker.in_flight

    # -- commits ------------------------------------------------------------------------------------
    def _commit(self, parts, asynchronous: bool) -> None:
        offsets = [TopicPartition(p.topic, p.partition, p.tracker.position) for p in parts
                   if p.tracker.position is not None and p.tracker.position > p.committed]
        if not offsets:
            return
        self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        for p in parts:
            if p.tracker.position is not None:
                p.committed = max(p.committed, p.tracker.position)
        self._last_commit = time.monotonic()

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = [tp for tp in partitions if err is not None or tp.error is not None]
        for tp in failed:
            p = self._parts.get((tp.topic, tp.partition))
            if p is not None:
                p.committed = -1  # commit it again on the next turn
        if failed:
            log.warning("offset commit failed for %s: %s", [f"{tp.topic}[{tp.partition}]" for tp in failed],
                        err or failed[0].error)

    def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit >= self.s.commit_interval_s:
            try:
                self._commit(list(self._parts.values()), asynchronous=True)
            except KafkaException as e:
                log.warning("offset commit failed: %s", e)

    # -- Source ------------------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        self._rewind()
        self._maybe_commit()
        out: list[Message] = []
        # consume(n, t) waits for all n or the whole t: take what is there now, and only wait for the first.
        batch = self.consumer.consume(max_messages, 0)
        if not batch:
            batch = self.consumer.consume(1, timeout_s)
            if batch and max_messages > 1:
                batch += self.consumer.consume(max_messages - 1, 0)
        for m in batch:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka consume: %s", err)
                continue
            part = self._parts.get((m.topic(), m.partition()))
            if part is None or not part.tracker.accept(m.offset()):
                continue
            body = m.value() or b""
            headers = m.headers() or []
            parts, kind = shape(body, m.topic() in self.s.tick_topics or _is_tick(headers))
            out.append(Message(body, message_id(m.topic(), m.partition(), m.offset()),
                               _Handle(part, m.offset(), m.key(), body, headers), parts=parts, kind=kind))
            self._in_flight += 1
        return out

    def heartbeat(self, in_flight: list[Message]) -> None:
        if self._paused or self._in_flight < self.s.window or not in_flight:
            return
        if time.monotonic() - min(m.received for m in in_flight) > self.s.pause_after_s:
            log.info("engine stalling with %d unanswered: pausing %d partitions", self._in_flight, len(self._parts))
            self._pause(True)

    def _rewind(self) -> None:
        for p in self._parts.values():
            if p.rewind is None:
                continue
            try:
                self.consumer.seek(TopicPartition(p.topic, p.partition, p.rewind))
                p.rewind = None
            except KafkaException as e:  # e.g. not fetching yet right after an assignment: next turn
                log.debug("seek %s[%d] to %d deferred: %s", p.topic, p.partition, p.rewind, e)

    def _pause(self, pause: bool) -> None:
        try:
            assignment = self.consumer.assignment()
            (self.consumer.pause if pause else self.consumer.resume)(assignment)
            self._paused = pause
        except KafkaException as e:
            log.warning("%s failed: %s", "pause" if pause else "resume", e)

    def _settled(self, msg: Message) -> _Partition | None:
        """The message's partition if this member still owns it (else its answer is moot: the new
        owner re-reads it from the committed offset)."""
        h: _Handle = msg.handle
        part = self._parts.get((h.part.topic, h.part.partition))
        if part is not h.part:
            return None
        self._in_flight -= 1
        if self._paused and self._in_flight <= self.s.window // 2:
            self._pause(False)
        return part

    def ack(self, msg: Message, decision: dict) -> None:
        part = self._settled(msg)
        if part is not None:
            part.tracker.answered(msg.handle.offset)
            self._maybe_commit()

    def requeue(self, msg: Message, why: str) -> None:
        part = self._settled(msg)
        if part is None:
            return
        off = msg.handle.offset
        part.tracker.requeued(off)
        part.rewind = off if part.rewind is None else min(part.rewind, off)
        log.debug("requeue %s: %s", msg.msg_id, why)

    def dead_letter(self, msg: Message, reason: str, decision: dict) -> None:
        h: _Handle = msg.handle
        if self._parts.get((h.part.topic, h.part.partition)) is not h.part:
            return
        dlq = self.s.dlq_for(h.part.topic)
        error = self._produce_dead_letter(dlq, h, reason, msg.msg_id)
        if error is not None:
            log.error("dead-letter of %s to %s failed (%s); requeueing it", msg.msg_id, dlq, error)
            self.requeue(msg, "dead-letter produce failed")
            return
        log.info("dead-lettered %s to %s: %s", msg.msg_id, dlq, reason)
        self.ack(msg, decision)

    def _produce_dead_letter(self, topic: str, h: _Handle, reason: str, msg_id: str) -> str | None:
        if self._producer is None:
            self._producer = Producer({**self.s.extra, "bootstrap.servers": self.s.bootstrap,
                                       "enable.idempotence": True, "acks": "all", "linger.ms": 0,
                                       "error_cb": lambda e: log.warning("kafka dead-letter producer: %s", e)})
        report: list[KafkaError | None] = []
        headers = [*h.headers, (REASON_HEADER, reason[:1000].encode()), ("x-wojak-source-topic", h.part.topic.encode()),
                   ("x-wojak-source-partition", str(h.part.partition).encode()),
                   ("x-wojak-source-offset", str(h.offset).encode()), ("x-wojak-msg-id", msg_id.encode())]
        try:
            self._producer.produce(topic, value=h.value, key=h.key, headers=headers,
                                   on_delivery=lambda err, m: report.append(err))
            deadline = time.monotonic() + 30
            while not report and time.monotonic() < deadline:
                self._producer.poll(0.1)
        except (KafkaException, BufferError) as e:
            return str(e)
        if not report:
            return "no delivery report in 30s"
        return None if report[0] is None else str(report[0])

    def close(self) -> None:
        try:
            self._commit(list(self._parts.values()), asynchronous=False)
        except KafkaException as e:
            log.warning("final commit failed (the group re-reads from the last commit): %s", e)
        try:
            self.consumer.close()  # leaves the group now, so the others rebalance at once
        except (KafkaException, RuntimeError) as e:
            log.warning("consumer close: %s", e)
        if self._producer is not None:
            self._producer.flush(10)


def main(cfg: Config) -> int:
    return start(cfg, "kafka", Settings.from_env, KafkaSource, lambda s: s.receive_max)
