"""The engine: a lightweight pre-trade risk gate. Read it in the order an order flows:

    protocol.py   the wire (msgpack frames, versioned, batched)
    intake.py     item -> Order | Tick | keyed SCHEMA rejection
    core.py       the pipeline: idempotency -> gate -> intents -> broker -> settle -> commit -> answer
    risk/         book (state), validate (REJECTED), limits (ESCALATED), gate (their order)
    broker/       base (interface), sandbox (seeded, journaled)
    settle.py     broker results -> decision, trades, positions
    store/        base (interface), sqlite (embedded), couchbase (production)
    reconcile.py  crash recovery of pending intents, by asking the broker
    outbox.py     escalations delivered to the full risk-management system
    server.py     the ZeroMQ ROUTER loop;  client.py  a blocking client
"""
