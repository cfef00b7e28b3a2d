"""Sidecars: one adapter per source, all the same shape.

    link.py      the ZeroMQ DEALER to the engine (window, batching, resend, reconnection)
    runtime.py   the adapter contract (ack / requeue / dead_letter) and the loop for pull sources
    payload.py   a message body whole, or the orders of a batch message
    settings.py  WOJAK_* environment settings;  metrics.py  Prometheus metrics;  main.py  the entry
    memory.py    an in-memory source: the reference adapter
    aws_common.py   boto3 clients and the entry shared by sqs, sns, stepfunctions, kinesis
    http.py sqs.py sns.py stepfunctions.py kinesis.py pubsub.py kafka.py rabbitmq.py   one each
"""
