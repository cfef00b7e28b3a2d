"""What the RabbitMQ sidecar sends the engine for one AMQP message (pure functions)."""
from __future__ import annotations

import pika

from sidecars.rabbitmq import message_id


def test_message_id_when_publisher_sets_usable_id_then_kept_else_body_hash():
    assert message_id(pika.BasicProperties(message_id="ord-1"), b"x") == "ord-1"
    hashed = message_id(pika.BasicProperties(message_id="has spaces!"), b"x")
    assert hashed.startswith("amqp-") and hashed == message_id(pika.BasicProperties(), b"x")
    assert message_id(pika.BasicProperties(), b"y") != hashed
