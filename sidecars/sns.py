"""`wojak sidecar sns`: orders published to an SNS topic, consumed the robust way - through an SQS
queue subscribed to the topic. The sidecar unwraps the SNS envelope and otherwise behaves exactly
as the SQS sidecar (sidecars/sqs.py: delete after the answer, requeue, visibility, dead letters).

Settings: the SQS sidecar's, prefixed WOJAK_SNS_ instead of WOJAK_SQS_:

    WOJAK_SNS_QUEUE_URL             the queue subscribed to the topic (required)
    WOJAK_SNS_DLQ_URL               explicit dead-letter queue (optional; else the queue's redrive policy)
    WOJAK_SNS_VISIBILITY_TIMEOUT_S  visibility timeout for received messages (default: the queue's)
    WOJAK_SNS_REQUEUE_DELAY_S       visibility given to a requeued message (default 0)

Delivery: both forms are recognised per message, so switching the subscription's
RawMessageDelivery needs no redeploy. Non-raw: the body is SNS's JSON envelope
({"Type": "Notification", "TopicArn", "MessageId", "Message", ...}); the order is its "Message" and
the SNS MessageId keys it. Raw: the body is the published message itself. (No valid order looks
like an envelope: orders forbid unknown fields.) The envelope's signature is not verified: the
queue policy below is what admits only the topic. A dead-lettered message goes to the DLQ as it
was received (envelope included), with the `wojak-reason` attribute.

Resources the platform declares (Pulumi, pulumi-aws), for one topic:
    aws.sns.Topic                 the order topic (FIFO topic + FIFO queue if ordering per group matters)
    aws.sqs.Queue  (dead letters) message_retention_seconds at the maximum (14 days)
    aws.sqs.Queue  (orders)       visibility_timeout_seconds >= the engine's give-up time (30 s),
                                  receive_wait_time_seconds=20, redrive_policy={deadLetterTargetArn:
                                  the DLQ's arn, maxReceiveCount: 5}
    aws.sqs.QueuePolicy           on the orders queue: Allow principal service sns.amazonaws.com
                                  sqs:SendMessage, Condition ArnEquals aws:SourceArn = the topic's arn
    aws.sns.TopicSubscription     protocol="sqs", endpoint=the orders queue's arn,
                                  raw_message_delivery=True (smaller messages; both forms work)
    IAM for the sidecar's role    sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility,
                                  sqs:GetQueueAttributes on the orders queue; sqs:SendMessage on the
                                  DLQ if WOJAK_SNS_DLQ_URL is used; kms:Decrypt if the queue is SSE-KMS
                                  (and kms:GenerateDataKey/Decrypt for sns.amazonaws.com on that key).
"""
from __future__ import annotations

import msgspec

from engine.config import Config
from sidecars import aws_common
from sidecars.payload import split_parts
from sidecars.runtime import Message
from sidecars.sqs import Receipt, SqsSource

_json_any = msgspec.json.Decoder()


def unwrap(body: bytes) -> tuple[bytes, str | None]:
    """(the published message, its SNS MessageId) from a non-raw delivery; (body, None) if raw."""
    if not body.startswith(b"{") or b'"Notification"' not in body:
        return body, None
    try:
        env = _json_any.decode(body)
    except msgspec.DecodeError:
        return body, None
    if isinstance(env, dict) and env.get("Type") == "Notification" and "TopicArn" in env \
            and isinstance(env.get("Message"), str):
        mid = env.get("MessageId")
        return env["Message"].encode(), mid if isinstance(mid, str) and mid else None
    return body, None


class SnsSource(SqsSource):
    name = "sns"
    env_prefix = "WOJAK_SNS"

    def decode(self, m: dict, receipt: Receipt) -> Message:
        payload, sns_id = unwrap(receipt.body.encode())
        return Message(payload, sns_id or m["MessageId"], receipt, parts=split_parts(payload))


def main(cfg: Config) -> int:
    return aws_common.run(cfg, "sns", SnsSource.from_env)
