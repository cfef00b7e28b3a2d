"""Sidecars: one adapter per source, all the same shape.

    link.py      the ZeroMQ DEALER to the engine (window, batching, resend, reconnection)
    runtime.py   the adapter contract (ack / requeue / dead_letter) and the loop for pull sources
    settings.py  WOJAK_* environment settings;  metrics.py  Prometheus metrics
    http.py sqs.py sns.py stepfunctions.py kinesis.py pubsub.py kafka.py rabbitmq.py   one each
"""
