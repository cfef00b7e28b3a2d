"""`wojak sidecar sqs`: orders from an SQS queue (standard or FIFO) to the engine.

Settings (environment, as an orchestrator passes them), besides WOJAK_ENGINE_ENDPOINT, WOJAK_WINDOW,
WOJAK_METRICS_PORT and the WOJAK_AWS_* of sidecars/aws_common.py:

    WOJAK_SQS_QUEUE_URL             the queue to consume (required)
    WOJAK_SQS_DLQ_URL               explicit dead-letter queue for malformed messages (optional; a FIFO
                                    queue needs a FIFO DLQ). Unset: the queue's own redrive policy
                                    moves them; a queue with neither is refused at start.
    WOJAK_SQS_VISIBILITY_TIMEOUT_S  visibility timeout for received messages (default: the queue's)
    WOJAK_SQS_REQUEUE_DELAY_S       visibility given to a requeued message (default 0: retry now)

Behaviour:
- Long polling, up to 10 messages per ReceiveMessage (the runtime asks for what its window can take).
- A message is deleted only after the engine's answer (DeleteMessageBatch, flushed every turn: a
  delayed delete can only cause a redelivery, which the engine answers from its store).
- Requeue = ChangeMessageVisibility to WOJAK_SQS_REQUEUE_DELAY_S (0 by default).
- Slow answers: every turn, a message older than half its visibility timeout gets the full timeout
  again, so the queue never redelivers a message the engine is still deciding.
- Malformed (the engine recorded REJECTED/SCHEMA): with WOJAK_SQS_DLQ_URL, the body is sent there
  with the message attributes `wojak-reason` (the engine's reason) and `wojak-source-message-id`,
  then the original is deleted. Without it, the message is made visible again and the queue's
  redrive policy (maxReceiveCount) moves it to the queue's DLQ; each redelivery before that is
  answered from the engine's store, and the reason is the recorded decision, keyed by
  `!<MessageId>` (or the message's client_order_id).
- FIFO: order per MessageGroupId is kept because SQS hands out a group's next messages only after
  the ones in flight are deleted or expire, the sidecar forwards a receive's messages in order, and
  the engine decides them in the order they arrive. A message the engine could not decide
  (PENDING) is redelivered after later messages of its group were already decided.
- Ticks: a message whose JSON says "kind": "tick". Several orders in one message: a JSON array of
  order objects; the message is settled once every order in it is answered.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from engine.config import Config
from sidecars import aws_common
from sidecars.payload import split_parts
from sidecars.runtime import Message, Source
from sidecars.settings import SettingsError, env

log = logging.getLogger("wojak.sidecar.sqs")

BATCH = 10  # SQS's limit for ReceiveMessage and the *Batch calls
REASON_ATTR = "wojak-reason"
SOURCE_ID_ATTR = "wojak-source-message-id"


@dataclass(slots=True)
class Receipt:
    """What a Message's `handle` holds for an SQS delivery."""

    receipt_handle: str
    body: str
    group: str | None
    visible_until: float  # monotonic: when SQS would make it visible again
    receive_count: int = 1
    extra: Any = None  # a subclass's data (the Step Functions task token)


@dataclass
class SqsSettings:
    queue_url: str
    dlq_url: str | None = None
    visibility_timeout_s: int | None = None
    requeue_delay_s: int = 0

    @classmethod
    def from_env(cls, prefix: str) -> "SqsSettings":
        return cls(queue_url=env(f"{prefix}_QUEUE_URL", required=True), dlq_url=env(f"{prefix}_DLQ_URL"),
                   visibility_timeout_s=env(f"{prefix}_VISIBILITY_TIMEOUT_S", None, int),
                   requeue_delay_s=env(f"{prefix}_REQUEUE_DELAY_S", 0, int))


@dataclass
class _Buffers:
    deletes: list[dict] = field(default_factory=list)
    visibility: list[dict] = field(default_factory=list)


class SqsSource(Source):
    name = "sqs"
    env_prefix = "WOJAK_SQS"

    def __init__(self, sqs: Any, settings: SqsSettings) -> None:
        self.sqs = sqs
        self.settings = settings
        self.queue_url = settings.queue_url
        attrs = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])["Attributes"]
        self.fifo = attrs.get("FifoQueue") == "true"
        self.has_redrive = bool(attrs.get("RedrivePolicy"))
        self.visibility_s = settings.visibility_timeout_s or int(attrs.get("VisibilityTimeout", 30))
        if not settings.dlq_url and not self.has_redrive:
            raise SettingsError(f"{self.queue_url} has no redrive policy and ${self.env_prefix}_DLQ_URL is unset: "
                                "malformed messages would be redelivered forever")
        self._buf = _Buffers()
        self._entry_ids = 0

    @classmethod
    def from_env(cls) -> "SqsSource":
        return cls(aws_common.client("sqs"), SqsSettings.from_env(cls.env_prefix))

    # -- receiving ------------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout_s: float) -> list[Message]:
        self._flush()
        kwargs: dict[str, Any] = dict(QueueUrl=self.queue_url, MaxNumberOfMessages=max(1, min(BATCH, max_messages)),
                                      WaitTimeSeconds=max(0, min(20, round(timeout_s))),
                                      MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
                                      MessageAttributeNames=["All"])
        if self.settings.visibility_timeout_s:
            kwargs["VisibilityTimeout"] = self.settings.visibility_timeout_s
        started = time.monotonic()
        raw = self.sqs.receive_message(**kwargs).get("Messages", [])
        out = []
        for m in raw:
            attrs = m.get("Attributes", {})
            receipt = Receipt(m["ReceiptHandle"], m.get("Body", ""), attrs.get("MessageGroupId"),
                              started + self.visibility_s, int(attrs.get("ApproximateReceiveCount", 1)))
            out.append(self.decode(m, receipt))
        return out

    def decode(self, m: dict, receipt: Receipt) -> Message:
        """One SQS message -> a Message for the engine (subclasses unwrap envelopes here)."""
        body = receipt.body.encode()
        return Message(body, m["MessageId"], receipt, parts=split_parts(body))

    # -- settling -------------------------------------------------------------------------------
    def ack(self, msg: Message, decision: dict) -> None:
        self._buf.deletes.append(self._entry(ReceiptHandle=msg.handle.receipt_handle))
        if len(self._buf.deletes) >= BATCH:
            self._flush()

    def requeue(self, msg: Message, why: str) -> None:
        log.info("%s requeue %s: %s", self.name, msg.msg_id, why)
        self._make_visible(msg, self.settings.requeue_delay_s)

    def dead_letter(self, msg: Message, reason: str, decision: dict) -> None:
        receipt: Receipt = msg.handle
        if not self.settings.dlq_url:
            # the queue's redrive policy moves it once maxReceiveCount is reached
            log.warning("%s dead-letter %s via redrive (receive %d): %s", self.name, msg.msg_id,
                        receipt.receive_count, reason)
            self._make_visible(msg, 0)
            return
        send: dict[str, Any] = dict(QueueUrl=self.settings.dlq_url, MessageBody=receipt.body or " ",
                                    MessageAttributes={
                                        REASON_ATTR: {"DataType": "String", "StringValue": reason[:1000] or "?"},
                                        SOURCE_ID_ATTR: {"DataType": "String", "StringValue": msg.msg_id}})
        if self.settings.dlq_url.endswith(".fifo"):
            send["MessageGroupId"] = receipt.group or "dead-letter"
            send["MessageDeduplicationId"] = msg.msg_id[:128]
        self.sqs.send_message(**send)
        log.warning("%s dead-lettered %s to %s: %s", self.name, msg.msg_id, self.settings.dlq_url, reason)
        # delete now, not batched: a redelivery after this point would put a second copy in the DLQ
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt.receipt_handle)

    def heartbeat(self, in_flight: list[Message]) -> None:
        try:
            self._flush()
            self._extend(in_flight)
        except Exception as e:  # never let a broker hiccup stop the loop; the queue redelivers at worst
            log.warning("%s heartbeat failed: %s", self.name, e)

    def close(self) -> None:
        try:
            self._flush()
        except Exception as e:
            log.warning("%s final flush failed (the queue will redeliver): %s", self.name, e)

    # -- helpers --------------------------------------------------------------------------------
    def _entry(self, **kw: Any) -> dict:
        self._entry_ids += 1
        return dict(Id=str(self._entry_ids), **kw)

    def _make_visible(self, msg: Message, after_s: int) -> None:
        self._buf.visibility.append(self._entry(ReceiptHandle=msg.handle.receipt_handle, VisibilityTimeout=after_s))
        if len(self._buf.visibility) >= BATCH:
            self._flush()

    def _extend(self, in_flight: list[Message]) -> None:
        now = time.monotonic()
        due = [m for m in in_flight if m.handle.visible_until - now < self.visibility_s / 2]
        if not due:
            return
        for m in due:
            m.handle.visible_until = now + self.visibility_s
            self._buf.visibility.append(self._entry(ReceiptHandle=m.handle.receipt_handle,
                                                    VisibilityTimeout=self.visibility_s))
        log.info("%s extended visibility of %d slow messages by %ds", self.name, len(due), self.visibility_s)
        self.on_extend(due)
        self._flush()

    def on_extend(self, msgs: list[Message]) -> None:
        """Hook: messages whose visibility was just extended (Step Functions heartbeats its tasks)."""

    def _flush(self) -> None:
        deletes, self._buf.deletes = self._buf.deletes, []
        changes, self._buf.visibility = self._buf.visibility, []
        for i in range(0, len(deletes), BATCH):
            self._batch("delete_message_batch", deletes[i:i + BATCH])
        for i in range(0, len(changes), BATCH):
            self._batch("change_message_visibility_batch", changes[i:i + BATCH])

    def _batch(self, call: str, entries: list[dict]) -> None:
        try:
            failed = getattr(self.sqs, call)(QueueUrl=self.queue_url, Entries=entries).get("Failed", [])
        except Exception as e:  # the messages stay at the queue and come back: answered as duplicates
            log.warning("%s %s of %d failed: %s", self.name, call, len(entries), e)
            return
        for f in failed:
            log.warning("%s %s entry failed: %s %s", self.name, call, f.get("Code"), f.get("Message"))


def main(cfg: Config) -> int:
    return aws_common.run(cfg, "sqs", SqsSource.from_env)
