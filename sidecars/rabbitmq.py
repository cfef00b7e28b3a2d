"""RabbitMQ source: consume a queue with manual acks and forward each message to the engine.

Contract at the broker (AMQP 0-9-1, pika's BlockingConnection, all on the Runner's thread because
pika is not thread-safe):

- prefetch = the sidecar's window, so the broker never hands over more than the engine may hold;
- `basic_ack` only after the engine's answer with a recorded decision;
- no decision (engine down, PENDING, sidecar draining) -> `basic_nack(requeue=True)`: redelivered;
- garbage (REJECTED with SCHEMA / DUPLICATE_ID_MISMATCH, recorded by the engine) -> the sidecar
  publishes a copy to the dead-letter exchange with the reason in the `x-wojak-reason` header,
  waits for the broker's publisher confirm, then acks the original. We publish it ourselves rather
  than `basic_reject(requeue=False)` because broker-side dead-lettering only records `x-death`
  (queue, count, "rejected"), never *why*; the reason is what an operator needs. A crash between
  the confirm and the ack redelivers the message and it is dead-lettered twice (at least once).
  The queue is still declared with `x-dead-letter-exchange`, so whatever the broker dead-letters
  on its own (TTL, length limit, a reject by another consumer) lands in the same place;
- a lost connection drops every unacked delivery back to the queue (the broker does it); the
  sidecar reconnects, and settlements of deliveries from the old channel are skipped.

A message is an order, or a tick when its AMQP `type` property is "tick", when it arrives on the
tick queue (both sent to the engine as kind "tick"), or when its JSON says "kind": "tick". A JSON array of orders is one message carrying
several orders: it is acked once every order in it is answered.

Settings (environment):
    WOJAK_RABBITMQ_URL          amqp(s)://user:pass@host:port/vhost        (required)
    WOJAK_RABBITMQ_QUEUE        the orders queue                            (required)
    WOJAK_RABBITMQ_TICK_QUEUE   a second queue whose messages are all ticks (optional)
    WOJAK_RABBITMQ_DLX          dead-letter exchange (fanout)               (default: <queue>.dlx)
    WOJAK_RABBITMQ_DLQ          queue bound to the DLX                      (default: <queue>.dlq)
    WOJAK_RABBITMQ_DECLARE      declare exchange and queues at start-up: true|false (default true);
                                false when operators own the topology (arguments must then match)
    WOJAK_RABBITMQ_QUEUE_TYPE   classic|quorum, for declared queues         (default classic)
    WOJAK_RABBITMQ_PREFETCH     prefetch count                              (default: WOJAK_WINDOW)
    WOJAK_RABBITMQ_RECEIVE_MAX  deliveries handed to the engine link per turn (default 200)
    WOJAK_RABBITMQ_HEARTBEAT_S  AMQP heartbeat                              (default 30)
plus the common WOJAK_ENGINE_ENDPOINT, WOJAK_WINDOW, WOJAK_METRICS_PORT (sidecars/settings.py).
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import deque
from dataclasses import dataclass

import pika
from pika.exceptions import AMQPError

from engine.config import Config
from sidecars.main import start
from sidecars.payload import shape
from sidecars.runtime import Message, Source
from sidecars.settings import SettingsError, env, flag, window

log = logging.getLogger("wojak.sidecar.rabbitmq")

REASON_HEADER = "x-wojak-reason"
_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


@dataclass(frozen=True)
class Settings:
    url: str
    queue: str
    tick_queue: str | None
    dlx: str
    dlq: str
    declare: bool
    queue_type: str
    prefetch: int
    receive_max: int
    heartbeat_s: int

    @classmethod
    def from_env(cls) -> "Settings":
        queue = env("WOJAK_RABBITMQ_QUEUE", required=True)
        queue_type = env("WOJAK_RABBITMQ_QUEUE_TYPE", "classic")
        if queue_type not in ("classic", "quorum"):
            raise SettingsError(f"$WOJAK_RABBITMQ_QUEUE_TYPE={queue_type!r}: expected classic or quorum")
        s = cls(url=env("WOJAK_RABBITMQ_URL", required=True), queue=queue,
                tick_queue=env("WOJAK_RABBITMQ_TICK_QUEUE", None),
                dlx=env("WOJAK_RABBITMQ_DLX", f"{queue}.dlx"), dlq=env("WOJAK_RABBITMQ_DLQ", f"{queue}.dlq"),
                declare=env("WOJAK_RABBITMQ_DECLARE", True, flag), queue_type=queue_type,
                prefetch=env("WOJAK_RABBITMQ_PREFETCH", window(), int),
                receive_max=env("WOJAK_RABBITMQ_RECEIVE_MAX", 200, int),
                heartbeat_s=env("WOJAK_RABBITMQ_HEARTBEAT_S", 30, int))
        if s.prefetch < 1 or s.receive_max < 1:
            raise SettingsError("$WOJAK_RABBITMQ_PREFETCH and $WOJAK_RABBITMQ_RECEIVE_MAX must be >= 1")
        return s


def message_id(props: pika.BasicProperties, body: bytes) -> str:
    """Stable across redeliveries: the publisher's message_id when it is a usable key, else the body's hash."""
    mid = props.message_id
    if isinstance(mid, str) and _ID.match(mid):
        return mid
    return "amqp-" + hashlib.blake2b(body, digest_size=12).hexdigest()


def declare_topology(ch, queue: str, dlx: str, dlq: str, tick_queue: str | None = None,
                     queue_type: str = "classic") -> None:
    """Durable queues whose broker-side dead letters go to a fanout DLX with the DLQ bound to it.
    Idempotent; a queue that exists with other arguments makes the broker refuse (PRECONDITION_FAILED)."""
    args = {"x-queue-type": queue_type}
    ch.exchange_declare(dlx, exchange_type="fanout", durable=True)
    ch.queue_declare(dlq, durable=True, arguments=args)
    ch.queue_bind(dlq, dlx)
    for q in filter(None, (queue, tick_queue)):
        ch.queue_declare(q, durable=True, arguments={**args, "x-dead-letter-exchange": dlx})


@dataclass(slots=True)
class _Handle:
    generation: int  # which channel delivered it: tags are only valid on their own channel
    tag: int
    queue: str
    props: pika.BasicProperties
    body: bytes


class RabbitMQSource(Source):
    name = "rabbitmq"

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.params = pika.URLParameters(settings.url)
        self.params.heartbeat = settings.heartbeat_s
        self.params.blocked_connection_timeout = 60
        self._conn: pika.BlockingConnection | None = None
        self._ch = None
        self._dlq_ch = None
        self._generation = 0
        self._buffer: deque[Message] = deque()
        self._next_connect = 0.0

    # -- connection --------------------------------------------------------------------------
    def _connect(self) -> None:
        now = time.monotonic()
        if now < self._next_connect:
            raise ConnectionError("RabbitMQ unavailable; retrying shortly")
        self._next_connect = now + 1.0
        conn = pika.BlockingConnection(self.params)
        try:
            ch = conn.channel()
            if self.s.declare:
                declare_topology(ch, self.s.queue, self.s.dlx, self.s.dlq, self.s.tick_queue, self.s.queue_type)
            ch.basic_qos(prefetch_count=self.s.prefetch)
            dlq_ch = conn.channel()
            dlq_ch.confirm_delivery()  # basic_publish on it returns only once the broker confirmed
            self._generation += 1
            gen = self._generation
            ch.basic_consume(self.s.queue, lambda c, m, p, b: self._delivered(gen, self.s.queue, False, m, p, b))
            if self.s.tick_queue:
                ch.basic_consume(self.s.tick_queue,
                                 lambda c, m, p, b: self._delivered(gen, self.s.tick_queue, True, m, p, b))
        except BaseException:
            _quietly(conn.close)
            raise
        self._conn, self._ch, self._dlq_ch = conn, ch, dlq_ch
        log.info("consuming %s%s (prefetch %d)", self.s.queue,
                 f" and ticks from {self.s.tick_queue}" if self.s.tick_queue else "", self.s.prefetch)

    def _lost(self, e: Exception) -> None:
        """Drop the connection: the broker requeues every delivery we had not acked."""
        log.warning("rabbitmq connection lost: %s", e)
        conn, self._conn, self._ch, self._dlq_ch = self._conn, None, None, None
        self._buffer.clear()
        self._generation += 1
        if conn is not None:
            _quietly(conn.close)

    def _delivered(self, gen: int, queue: str, tick_queue: bool, method, props, body: bytes) -> None:
        tick = tick_queue or props.type == "tick"
        parts, kind = shape(body, tick)
        self._buffer.append(Message(body, message_id(props, body), _Handle(gen, method.delivery_tag, queue, props, body),
                                    parts=parts, kind=kind))

    # -- Source ----------------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        if self._conn is None:
            self._connect()
        try:
            deadline = time.monotonic() + timeout_s
            self._conn.process_data_events(time_limit=0)
            while not self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._conn.process_data_events(time_limit=min(left, 0.2))
        except AMQPError as e:
            self._lost(e)
            return []
        out = []
        while self._buffer and len(out) < max_messages:
            out.append(self._buffer.popleft())
        return out

    def _live(self, h: _Handle) -> bool:
        return self._ch is not None and h.generation == self._generation

    def ack(self, msg: Message, decision: dict) -> None:
        h: _Handle = msg.handle
        if not self._live(h):
            return  # its channel is gone: the broker has requeued it and the engine answers the redelivery
        try:
            self._ch.basic_ack(h.tag)
        except AMQPError as e:
            self._lost(e)

    def requeue(self, msg: Message, why: str) -> None:
        h: _Handle = msg.handle
        if not self._live(h):
            return
        log.debug("requeue %s: %s", msg.msg_id, why)
        try:
            self._ch.basic_nack(h.tag, requeue=True)
        except AMQPError as e:
            self._lost(e)

    def dead_letter(self, msg: Message, reason: str, decision: dict) -> None:
        h: _Handle = msg.handle
        if not self._live(h):
            return
        p = h.props
        headers = dict(p.headers or {})
        headers.update({REASON_HEADER: reason[:1000], "x-wojak-source-queue": h.queue,
                        "x-wojak-msg-id": msg.msg_id})
        props = pika.BasicProperties(content_type=p.content_type, content_encoding=p.content_encoding,
                                     message_id=p.message_id, correlation_id=p.correlation_id, type=p.type,
                                     timestamp=p.timestamp, app_id=p.app_id, headers=headers, delivery_mode=2)
        try:
            # mandatory: an exchange with no queue bound would silently drop it; we want an error instead.
            self._dlq_ch.basic_publish(self.s.dlx, h.queue, h.body, props, mandatory=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
            log.error("dead-letter of %s not confirmed (%s); requeueing it", msg.msg_id, e)
            self.requeue(msg, "dead-letter publish failed")
            return
        except AMQPError as e:
            self._lost(e)
            return
        log.info("dead-lettered %s: %s", msg.msg_id, reason)
        self.ack(msg, decision)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _quietly(conn.close)


def _quietly(fn) -> None:
    try:
        fn()
    except Exception:
        pass


def main(cfg: Config) -> int:
    logging.getLogger("pika").setLevel(logging.WARNING)  # pika logs every connection step at INFO
    return start(cfg, "rabbitmq", Settings.from_env, RabbitMQSource, lambda s: s.receive_max)
