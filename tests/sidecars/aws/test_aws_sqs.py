"""SQS specifics against the real moto server: redrive dead letters, visibility extension for slow
answers, FIFO order per group, several orders in one message, refusing a queue with no DLQ."""
from __future__ import annotations

import json

import pytest

from aws_helpers import InProcess, decided, decisions, order, received_ids, wait_for
from sidecars.settings import SettingsError
from sidecars.sqs import SqsSettings, SqsSource
from tests.support.engine_proc import EngineProcess
from tests.support.moto_server import SqsFeed


def _source(feed: SqsFeed, explicit_dlq: bool = True) -> SqsSource:
    return SqsSource(feed.sqs, SqsSettings(feed.queue_url, feed.dlq_url if explicit_dlq else None))


def _engine(tmp_path, symbol, **sections) -> EngineProcess:
    sections.setdefault("risk", {}).setdefault("max_orders_per_second", 1_000_000)
    sections.setdefault("broker", {}).update(fill_probability=1.0)
    eng = EngineProcess(tmp_path / "eng", **sections).start()
    with eng.client() as c:
        c.call("tick", [{"symbol": symbol, "ltp": 26000.0}])
    return eng


def test_malformed_when_no_explicit_dlq_then_queue_redrive_moves_it_to_its_dlq(moto, engine, symbol):
    feed = SqsFeed(moto, "redrive", redrive_max_receives=2)
    feed.publish([b"not an order at all", order("rd-ok", symbol)])
    with InProcess(_source(feed, explicit_dlq=False), engine.endpoint):
        dead = wait_for(lambda: feed.dead_letters(wait_s=0.2) or None, 30, "the redrive to move it")
        wait_for(lambda: feed.outstanding() == 0, 15, "an empty queue")
    assert [body for body, _ in dead] == ["not an order at all"]
    d = decisions(engine)
    garbage = [x for k, x in d.items() if k.startswith("!")]
    assert len(garbage) == 1 and garbage[0].reasons[0].startswith("SCHEMA: not JSON")
    assert d["rd-ok"].status == "FILLED"
    assert decided(engine) == 2  # redeliveries before the redrive were answered from the store


def test_slow_answers_when_visibility_timeout_is_short_then_extended_and_never_redelivered(moto, tmp_path, symbol):
    eng = _engine(tmp_path, symbol, broker={"latency_ms": 2500.0})  # each broker batch takes 2.5 s
    try:
        feed = SqsFeed(moto, "slow", visibility_s=2)
        source = _source(feed)
        seen = received_ids(source)
        feed.publish([order(f"slow-{i}", symbol, account=f"s{i}") for i in range(6)])
        with InProcess(source, eng.endpoint):
            wait_for(lambda: decided(eng) == 6, 40, "6 slow decisions")
            wait_for(lambda: feed.outstanding() == 0, 15, "an empty queue")
        assert len(seen) == len(set(seen)) == 6, f"redelivered while the engine was deciding: {seen}"
        assert eng.broker_calls() and all(v == 1 for v in eng.broker_calls().values())
    finally:
        eng.stop()


def test_fifo_queue_when_groups_interleave_then_order_is_kept_per_group(moto, tmp_path, symbol):
    # max one lot per account: BUY, SELL, BUY, ... all fill only if each group is decided in order
    eng = _engine(tmp_path, symbol, risk={"max_position_lots": 1})
    try:
        feed = SqsFeed(moto, "fifo", fifo=True)
        for i in range(30):
            for g in ("ga", "gb", "gc"):
                feed.publish([order(f"{g}-{i}", symbol, "BUY" if i % 2 == 0 else "SELL", account=g)], group=g)
        with InProcess(_source(feed), eng.endpoint):
            wait_for(lambda: decided(eng) == 90, 60, "90 decisions")
            wait_for(lambda: feed.outstanding() == 0, 15, "an empty queue")
        d = decisions(eng)
        assert {x.status for x in d.values()} == {"FILLED"}, {k: x.reasons for k, x in d.items() if x.status != "FILLED"}
        for g in ("ga", "gb", "gc"):
            ts = [d[f"{g}-{i}"].ts for i in range(30)]
            assert ts == sorted(ts), f"group {g} decided out of order"
    finally:
        eng.stop()


def test_json_array_message_when_every_order_answered_then_acked_once(moto, engine, symbol):
    feed = SqsFeed(moto, "parts")
    many = b"[" + b",".join(order(f"arr-{i}", symbol, account=f"p{i}") for i in range(4)) + b"]"
    with_garbage = b"[" + order("arr-ok", symbol) + b',{"client_order_id": "arr-bad", "side": "UP"}]'
    feed.publish([many, with_garbage])
    with InProcess(_source(feed), engine.endpoint) as run:
        wait_for(lambda: decided(engine) == 6, 30, "6 decisions")
        wait_for(lambda: feed.outstanding() == 0, 15, "an empty queue")
        wait_for(lambda: run.runner.settled["dead_letter"] == 1, 5, "the dead letter")
    assert run.runner.settled["ack"] == 1
    d = decisions(engine)
    assert all(d[f"arr-{i}"].status == "FILLED" for i in range(4)) and d["arr-ok"].status == "FILLED"
    assert d["arr-bad"].status == "REJECTED" and d["arr-bad"].reasons[0].startswith("SCHEMA")
    dead = feed.dead_letters()
    assert [json.loads(b)[1]["client_order_id"] for b, _ in dead] == ["arr-bad"]
    assert dead[0][1].startswith("SCHEMA")


def test_queue_without_redrive_or_dlq_when_sidecar_starts_then_refused_naming_the_variable(moto):
    feed = SqsFeed(moto, "nodlq")
    with pytest.raises(SettingsError, match="WOJAK_SQS_DLQ_URL"):
        _source(feed, explicit_dlq=False)


@pytest.mark.parametrize("source,env,says", [
    ("sqs", {}, "WOJAK_SQS_QUEUE_URL is required"),
    ("stepfunctions", {"WOJAK_STEPFUNCTIONS_QUEUE_URL": "http://127.0.0.1:1/123456789012/nope"}, "not started"),
    ("kinesis", {"WOJAK_KINESIS_STREAM": "no-such-stream"}, "ResourceNotFoundException"),
])
def test_sidecar_when_misconfigured_then_exits_2_with_one_clear_line(moto, tmp_path, source, env, says):
    import os
    import subprocess
    import sys

    full = {k: v for k, v in os.environ.items() if not k.startswith("WOJAK_")}
    full.update(moto.env(), WOJAK_AWS_MAX_ATTEMPTS="1", WOJAK_ENGINE_ENDPOINT=f"ipc://{tmp_path}/e.sock", **env)
    r = subprocess.run([sys.executable, "-m", "wojak.cli", "sidecar", source], env=full, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    assert says in r.stderr and "Traceback" not in r.stderr
