"""SNS specifics: raw delivery decoded like the envelope; the envelope's MessageId keys the order."""
from __future__ import annotations

from aws_helpers import InProcess, decided, decisions, order, wait_for
from sidecars.sns import SnsSource
from sidecars.sqs import SqsSettings
from tests.support.moto_server import SnsFeed


def test_raw_delivery_when_published_then_decided_like_enveloped_and_queue_emptied(moto, engine, symbol):
    feed = SnsFeed(moto, "raw", raw=True)
    feed.publish([order(f"raw-{i}", symbol, account=f"r{i}") for i in range(5)] + [b"raw garbage"])
    source = SnsSource(feed.sqs, SqsSettings(feed.queue_url, feed.dlq_url))
    with InProcess(source, engine.endpoint):
        wait_for(lambda: decided(engine) == 6, 30, "6 decisions")
        wait_for(lambda: feed.outstanding() == 0, 15, "an empty queue")
    assert all(decisions(engine)[f"raw-{i}"].status == "FILLED" for i in range(5))
    dead = feed.dead_letters()
    assert [b for b, _ in dead] == ["raw garbage"] and dead[0][1].startswith("SCHEMA: not JSON")


def test_enveloped_garbage_when_redelivered_then_keyed_by_the_sns_message_id(moto, engine, symbol):
    feed = SnsFeed(moto, "env")
    feed.publish([b"garbage in an envelope"])
    msgs = feed.sqs.receive_message(QueueUrl=feed.queue_url, WaitTimeSeconds=1)["Messages"]
    sns_id = __import__("json").loads(msgs[0]["Body"])["MessageId"]
    feed.sqs.change_message_visibility(QueueUrl=feed.queue_url, ReceiptHandle=msgs[0]["ReceiptHandle"],
                                       VisibilityTimeout=0)
    with InProcess(SnsSource(feed.sqs, SqsSettings(feed.queue_url, feed.dlq_url)), engine.endpoint):
        wait_for(lambda: decided(engine) == 1, 30, "1 decision")
        wait_for(lambda: feed.outstanding() == 0, 15, "an empty queue")
    assert list(decisions(engine)) == ["!" + sns_id]
