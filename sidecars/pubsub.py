"""Google Cloud Pub/Sub source: a streaming pull on one subscription, settled by the engine's answer.

Streaming pull is push-style (the client library calls back on its own thread pool), so the callback
only hands each delivery to a bounded local queue; `receive()` drains it on the Runner's thread and the
Runner (sidecars/runtime.py) decides ack / requeue / dead-letter as for every other source:

    ack          Message.ack()      only after the engine answered with a recorded decision
    requeue      Message.nack()     (after WOJAK_PUBSUB_REQUEUE_DELAY_S, see below): Pub/Sub redelivers
    dead_letter  publish the message to WOJAK_PUBSUB_DLQ_TOPIC with the reason as the `wojak_reason`
                 attribute, wait until Pub/Sub has stored it, then ack the original

Flow control: FlowControl(max_messages=WOJAK_WINDOW) bounds the messages leased by this process
(delivered and not yet settled), so the local queue plus the engine link's window never hold more.

Ack deadlines: the library's lease manager extends the ack deadline of every leased message by itself,
so a slow answer (engine restarting, link resending) never lets Pub/Sub redeliver a message still being
worked on. Two settings bound it deliberately:
  - WOJAK_PUBSUB_LEASE_EXTENSION_S (max_duration_per_lease_extension, also the stream's ack deadline):
    each extension is this long, so after a sidecar crash its messages are redelivered within about
    this many seconds. Short is right for orders: the engine answers in milliseconds.
  - WOJAK_PUBSUB_MAX_LEASE_S (max_lease_duration): a message held longer than this stops being
    extended and is redelivered (to this or another replica). The engine link gives up on an item
    after 30 s and requeues it, so this is only a backstop against a wedged process.

Dead letters, ours and Pub/Sub's: ours is for messages the engine *recorded* as garbage (not JSON,
wrong schema, binary, oversized: REJECTED with SCHEMA): they go to our topic at once, with the reason.
A subscription's own `dead_letter_policy` (max_delivery_attempts) is for poison messages that keep
failing without a decision (requeued again and again); give it the same topic and both paths end in
one place: ours carries `wojak_reason`, Pub/Sub's carries its `CloudPubSubDeadLetterSourceDelivery...`
attributes. We copy the delivery attempt into `wojak_delivery_attempt` when Pub/Sub reports one.

Several orders in one message: a JSON array of order objects (at most
WOJAK_PUBSUB_MAX_ORDERS_PER_MESSAGE) is forwarded as parts and the message is acked only once every
part has its recorded decision (any part requeued -> the whole message is requeued; the engine answers
the already-decided parts as duplicates on redelivery). Anything else is forwarded as is.

Ticks: a message whose JSON says "kind": "tick" is a tick (the engine tells them apart).

Settings (environment):
  PUBSUB_EMULATOR_HOST                  host:port of an emulator; honoured by the client library
  GOOGLE_APPLICATION_CREDENTIALS        standard Google credentials (or the metadata server)
  WOJAK_ENGINE_ENDPOINT                 the engine's ZeroMQ endpoint (default: [engine] endpoint)
  WOJAK_WINDOW                          messages in flight to the engine, and leased (default 100)
  WOJAK_PUBSUB_PROJECT                  project id of the subscription and the DLQ topic (required
                                        unless both are full paths)
  WOJAK_PUBSUB_SUBSCRIPTION             subscription id or projects/P/subscriptions/S (required)
  WOJAK_PUBSUB_DLQ_TOPIC                topic id or projects/P/topics/T for dead letters (required)
  WOJAK_PUBSUB_LEASE_EXTENSION_S        10..600, whole seconds per ack-deadline extension (default 10)
  WOJAK_PUBSUB_MAX_LEASE_S              longest a message stays leased, seconds (default 600)
  WOJAK_PUBSUB_MAX_BYTES                flow control on leased bytes (default 100 MiB)
  WOJAK_PUBSUB_REQUEUE_DELAY_S          a requeued message stays leased this long before the nack,
                                        so an engine answering PENDING is not asked again in a hot
                                        loop (default 1.0; 0 nacks at once)
  WOJAK_PUBSUB_MAX_ORDERS_PER_MESSAGE   largest JSON array split into orders (default 100); a larger
                                        one is forwarded whole and dead-lettered by the engine's SCHEMA
  WOJAK_PUBSUB_DLQ_TIMEOUT_S            wait for a dead-letter publish before requeueing (default 30)
"""
from __future__ import annotations

import heapq
import itertools
import logging
import queue
import time
import warnings
from dataclasses import dataclass
from typing import Any


from engine.config import Config
from sidecars.payload import split_parts
from sidecars.runtime import Message, Source
from sidecars.settings import SettingsError, env, window

log = logging.getLogger("wojak.sidecar.pubsub")



@dataclass(frozen=True)
class Settings:
    subscription: str  # full path
    dlq_topic: str  # full path
    window: int = 100
    lease_extension_s: int = 10  # an int: the library puts it in the stream request as is
    max_lease_s: float = 600.0
    max_bytes: int = 100 * 1024 * 1024
    requeue_delay_s: float = 1.0
    max_orders_per_message: int = 100
    dlq_timeout_s: float = 30.0

    @classmethod
    def from_env(cls) -> "Settings":
        project = env("WOJAK_PUBSUB_PROJECT", "")
        sub = _path(project, "subscriptions", env("WOJAK_PUBSUB_SUBSCRIPTION", required=True),
                    "WOJAK_PUBSUB_SUBSCRIPTION")
        dlq = _path(project, "topics", env("WOJAK_PUBSUB_DLQ_TOPIC", required=True), "WOJAK_PUBSUB_DLQ_TOPIC")
        ext = env("WOJAK_PUBSUB_LEASE_EXTENSION_S", 10, int)
        if not 10 <= ext <= 600:
            raise SettingsError(f"$WOJAK_PUBSUB_LEASE_EXTENSION_S={ext}: must be between 10 and 600")
        s = cls(sub, dlq, window=window(), lease_extension_s=ext,
                max_lease_s=env("WOJAK_PUBSUB_MAX_LEASE_S", 600.0, float),
                max_bytes=env("WOJAK_PUBSUB_MAX_BYTES", 100 * 1024 * 1024, int),
                requeue_delay_s=env("WOJAK_PUBSUB_REQUEUE_DELAY_S", 1.0, float),
                max_orders_per_message=env("WOJAK_PUBSUB_MAX_ORDERS_PER_MESSAGE", 100, int),
                dlq_timeout_s=env("WOJAK_PUBSUB_DLQ_TIMEOUT_S", 30.0, float))
        for name, value in (("WOJAK_WINDOW", s.window), ("WOJAK_PUBSUB_MAX_BYTES", s.max_bytes),
                            ("WOJAK_PUBSUB_MAX_ORDERS_PER_MESSAGE", s.max_orders_per_message)):
            if value < 1:
                raise SettingsError(f"${name}={value}: must be at least 1")
        if s.max_lease_s < ext or s.requeue_delay_s < 0 or s.dlq_timeout_s <= 0:
            raise SettingsError("$WOJAK_PUBSUB_MAX_LEASE_S must be >= the lease extension, "
                                "$WOJAK_PUBSUB_REQUEUE_DELAY_S >= 0 and $WOJAK_PUBSUB_DLQ_TIMEOUT_S > 0")
        return s


def _path(project: str, collection: str, name: str, var: str) -> str:
    if name.startswith("projects/"):
        if name.split("/")[2:3] != [collection] or len(name.split("/")) != 4:
            raise SettingsError(f"${var}={name!r}: expected projects/PROJECT/{collection}/NAME")
        return name
    if not project:
        raise SettingsError(f"$WOJAK_PUBSUB_PROJECT is required when ${var} is not a full path")
    return f"projects/{project}/{collection}/{name}"


class PubSubSource(Source):
    name = "pubsub"

    def __init__(self, settings: Settings, subscriber: Any = None, publisher: Any = None) -> None:
        from google.cloud import pubsub_v1

        self.settings = settings
        self._types = pubsub_v1.types
        self._subscriber = subscriber or pubsub_v1.SubscriberClient()
        self._publisher = publisher or pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.005))
        self._deliveries: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = False
        self._delayed: list[tuple[float, int, Any]] = []  # (due, seq, library message) awaiting nack
        self._seq = itertools.count()
        self._future: Any = None
        self._restart_at = 0.0
        self._subscribe()

    # -- the stream ---------------------------------------------------------------------------------
    def _flow_control(self) -> Any:
        s = self.settings
        return self._types.FlowControl(max_messages=s.window, max_bytes=s.max_bytes,
                                       max_lease_duration=s.max_lease_s,
                                       max_duration_per_lease_extension=s.lease_extension_s)

    def _subscribe(self) -> None:
        self._future = self._subscriber.subscribe(self.settings.subscription, callback=self._deliver,
                                                  flow_control=self._flow_control())
        log.info("pubsub streaming pull on %s (lease extension %.0fs, max lease %.0fs)",
                 self.settings.subscription, self.settings.lease_extension_s, self.settings.max_lease_s)

    def _deliver(self, message: Any) -> None:
        """The library's callback (its thread pool): hand over, never block, never decide. During
        close the queue is emptied once the stream has stopped, so late deliveries are handed back too."""
        self._deliveries.put(message)

    def _check_stream(self) -> None:
        """A stream that ended with an error (subscription deleted, permission lost, a long outage)
        is reopened; its unsettled messages are redelivered by Pub/Sub after their lease."""
        if self._future is None or not self._future.done() or self._closing:
            return
        now = time.monotonic()
        if now < self._restart_at:
            return
        try:
            self._future.result(timeout=0)
            why = "ended"
        except Exception as e:
            why = f"failed: {e}"
        log.warning("pubsub stream on %s %s; reopening", self.settings.subscription, why)
        self._restart_at = now + 2.0
        self._subscribe()

    # -- Source -------------------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        self._nack_due()
        self._check_stream()
        try:
            first = self._deliveries.get(timeout=timeout_s)
        except queue.Empty:
            return []
        out = [self._message(first)]
        while len(out) < max_messages:
            try:
                out.append(self._message(self._deliveries.get_nowait()))
            except queue.Empty:
                break
        return out

    def _message(self, m: Any) -> Message:
        return Message(m.data, m.message_id, handle=m, parts=split_parts(m.data, self.settings.max_orders_per_message))

    def ack(self, msg: Message, decision: dict) -> None:
        msg.handle.ack()

    def requeue(self, msg: Message, why: str) -> None:
        log.info("pubsub requeue %s: %s", msg.msg_id, why)
        delay = self.settings.requeue_delay_s
        if delay <= 0 or self._closing:
            msg.handle.nack()
            return
        # Keep the lease (the library keeps extending it) and nack later: no hot loop on PENDING.
        heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), msg.handle))

    def dead_letter(self, msg: Message, reason: str, decision: dict) -> None:
        m = msg.handle
        attributes = {k: v for k, v in dict(m.attributes).items() if not k.startswith("wojak_")}
        attributes.update(wojak_reason=reason[:1024], wojak_source_subscription=self.settings.subscription,
                          wojak_source_message_id=msg.msg_id)
        if decision.get("client_order_id"):
            attributes["wojak_client_order_id"] = str(decision["client_order_id"])[:1024]
        if m.delivery_attempt:
            attributes["wojak_delivery_attempt"] = str(m.delivery_attempt)
        try:
            self._publisher.publish(self.settings.dlq_topic, msg.payload, **attributes).result(
                timeout=self.settings.dlq_timeout_s)
        except Exception as e:  # not stored in the DLQ: keep the message, try again on redelivery
            log.warning("pubsub dead-letter publish of %s to %s failed (%s); requeueing", msg.msg_id,
                        self.settings.dlq_topic, e)
            self.requeue(msg, "dead-letter publish failed")
            return
        log.info("pubsub dead-lettered %s: %s", msg.msg_id, reason)
        m.ack()

    def heartbeat(self, in_flight: list[Message]) -> None:
        # Lease extension is the library's job; here only the delayed nacks fall due.
        self._nack_due()

    def _nack_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            heapq.heappop(self._delayed)[2].nack()

    def close(self) -> None:
        """Stop the stream (the library flushes queued acks and nacks what it still held), then hand
        back what we hold unsettled. The stream stops first: a message nacked while it is open is
        pushed straight back into it and would sit unseen until its ack deadline."""
        self._closing = True
        if self._future is not None:
            self._future.cancel()
            try:
                self._future.result(timeout=30)
            except Exception as e:
                log.warning("pubsub stream shutdown: %s", e)
        held = [entry[2] for entry in self._delayed]
        self._delayed.clear()
        while True:
            try:
                held.append(self._deliveries.get_nowait())
            except queue.Empty:
                break
        self._nack_now([m.ack_id for m in held])
        for close in (self._publisher.stop, self._subscriber.close):
            try:
                close()
            except Exception as e:
                log.warning("pubsub client close: %s", e)
        log.info("pubsub closed; %d unsettled messages handed back", len(held))

    def _nack_now(self, ack_ids: list[str]) -> None:
        """Deadline 0 over a plain RPC (the stream is gone): Pub/Sub may redeliver them at once."""
        for i in range(0, len(ack_ids), 1000):
            try:
                self._subscriber.modify_ack_deadline(request={"subscription": self.settings.subscription,
                                                              "ack_ids": ack_ids[i:i + 1000],
                                                              "ack_deadline_seconds": 0}, timeout=10)
            except Exception as e:  # they come back after their ack deadline instead
                log.warning("pubsub nack of %d messages on close failed: %s", len(ack_ids[i:i + 1000]), e)


def main(cfg: Config) -> int:
    from sidecars.main import start

    # google-api-core warns about future Python support on import; a sidecar's log is for trading.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")
    return start(cfg, "pubsub", Settings.from_env, PubSubSource, lambda s: s.window)
