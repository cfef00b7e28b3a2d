"""The contract every AWS sidecar keeps, against the real moto server, a real engine and the real
`wojak sidecar <source>` process: the same tests for SQS, SNS, Step Functions and Kinesis."""
from __future__ import annotations

import json
import random
import threading

import pytest

from aws_helpers import decided, decisions, order, stream, wait_for
from tests.support.moto_server import FEEDS, StepFunctionsFeed
from tests.support.sidecar_fixtures import assert_each_decided_once, last_price
from wojak.procs import SidecarProcess

SOURCES = ["sqs", "sns", "stepfunctions", "kinesis"]
# moto runs a thread per Step Functions execution: its kill tests use a shorter stream
KILL_STREAM = {"stepfunctions": 150}


@pytest.fixture(params=SOURCES)
def feed(request, moto):
    return FEEDS[request.param](moto, f"c-{request.param}")


@pytest.fixture
def sidecar_source(feed) -> str:
    return feed.source


@pytest.fixture
def run_sidecar(feed, engine, sidecars):
    return lambda: sidecars({"WOJAK_ENGINE_ENDPOINT": engine.endpoint, **feed.sidecar_env()})


def _settled(feed, engine, n: int, timeout_s: float, proc: SidecarProcess | None = None) -> None:
    try:
        wait_for(lambda: decided(engine) >= n, timeout_s, f"{n} decisions", every=0.1)
        wait_for(lambda: feed.outstanding(engine) == 0, 15, "nothing outstanding at the broker", every=0.25)
    except AssertionError as e:
        raise AssertionError(f"{e}; decided={decided(engine)} outstanding={feed.outstanding(engine)}\n"
                             f"{proc.tail() if proc else ''}") from None


def test_publish_1000_orders_when_sidecar_runs_then_1000_decisions_and_nothing_in_flight(feed, engine, symbol,
                                                                                          run_sidecar):
    payloads = stream(1000, symbol, f"v-{feed.source}")
    proc = run_sidecar()
    # published while the sidecar drains, as in production (moto's SQS slows with queue depth)
    publisher = threading.Thread(target=feed.publish, args=(payloads,))
    publisher.start()
    publisher.join(120)
    _settled(feed, engine, 1000, 90, proc)
    ids = [json.loads(p)["client_order_id"] for p in payloads]
    assert_each_decided_once(engine, ids)
    assert decided(engine) == 1000
    assert {d.status for d in decisions(engine).values()} == {"FILLED"}
    if isinstance(feed, StepFunctionsFeed):
        results = feed.wait_finished()
        assert {r["status"] for r in results.values()} == {"SUCCEEDED"}
        assert {r["output"]["route"] for r in results.values()} == {"filled"}


def test_engine_killed_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(feed, engine, symbol,
                                                                                     run_sidecar):
    n = KILL_STREAM.get(feed.source, 300)
    payloads = stream(n, symbol, f"ek-{feed.source}")
    proc = run_sidecar()
    feed.publish(payloads[:n // 2])
    wait_for(lambda: decided(engine) >= n // 5, 30, "the stream to start")
    engine.kill()
    feed.publish(payloads[n // 2:])  # the stream goes on while the engine is away
    engine.start()
    _settled(feed, engine, n, 60, proc)
    assert_each_decided_once(engine, [json.loads(p)["client_order_id"] for p in payloads])
    assert decided(engine) == n


def test_sidecar_sigkilled_mid_stream_when_restarted_then_nothing_lost_or_executed_twice(feed, engine, symbol,
                                                                                        run_sidecar):
    n = KILL_STREAM.get(feed.source, 300)
    payloads = stream(n, symbol, f"sk-{feed.source}")
    feed.publish(payloads[:n // 2])
    first = run_sidecar()
    wait_for(lambda: decided(engine) >= n // 5, 30, "the stream to start")
    first.kill()
    feed.publish(payloads[n // 2:])
    second = run_sidecar()
    _settled(feed, engine, n, 60, second)
    assert_each_decided_once(engine, [json.loads(p)["client_order_id"] for p in payloads])
    assert decided(engine) == n


def test_sigterm_during_stream_when_sidecar_drains_then_exit_0_and_nothing_lost(feed, engine, symbol, run_sidecar):
    n = KILL_STREAM.get(feed.source, 300)
    payloads = stream(n, symbol, f"st-{feed.source}")
    feed.publish(payloads[:n // 2])
    first = run_sidecar()
    wait_for(lambda: decided(engine) >= n // 10, 30, "the stream to start")
    publisher = threading.Thread(target=feed.publish, args=(payloads[n // 2:],))
    publisher.start()
    assert first.terminate() == 0, first.tail()
    publisher.join(60)
    second = run_sidecar()
    _settled(feed, engine, n, 60, second)
    assert_each_decided_once(engine, [json.loads(p)["client_order_id"] for p in payloads])
    assert decided(engine) == n


def _garbage_body() -> str:
    rnd = random.Random(7)
    # bytes that are not UTF-8 JSON, kept to characters an SQS body may carry
    return bytes(rnd.choice([b for b in range(0x20, 0x100) if b not in b'"{}[]']) for _ in range(300)).decode("latin-1")


def test_malformed_messages_when_published_then_dead_lettered_with_reason_and_rest_decided(feed, engine, symbol,
                                                                                          run_sidecar):
    good = stream(20, symbol, f"mg-{feed.source}")
    wrong_schema = json.dumps({"client_order_id": f"bad-{feed.source}", "symbol": symbol, "side": "HOLD",
                               "quantity": 65, "price": 26000.0})
    oversized = json.dumps({"client_order_id": f"big-{feed.source}", "symbol": symbol, "side": "BUY",
                            "quantity": 65, "price": 26000.0, "note": "x" * 70_000})
    not_json, binary = "this is { not json", _garbage_body()
    if isinstance(feed, StepFunctionsFeed):
        # an execution's input is JSON by construction: garbage reaches the queue only from elsewhere
        feed.send_raw(not_json)
        feed.send_raw(binary)
        feed.publish([wrong_schema.encode(), oversized.encode()] + good)
        to_dlq = {not_json, binary}
    else:
        feed.publish(good[:10] + [not_json.encode(), wrong_schema.encode()] + good[10:15])
        feed.send_raw(binary)
        feed.publish([oversized.encode()] + good[15:])
        to_dlq = {not_json, binary, wrong_schema, oversized}
    proc = run_sidecar()
    _settled(feed, engine, 24, 45, proc)
    dead = wait_for(lambda: feed.dead_letters(wait_s=0.2) or None, 15, "dead letters")
    dead += feed.dead_letters(wait_s=0.5)
    bodies = {_inner(feed, b): r for b, r in dead}
    assert set(bodies) == to_dlq, (set(bodies) ^ to_dlq)
    assert all(r and r.startswith("SCHEMA") for r in bodies.values()), bodies.values()
    if oversized in bodies:
        assert "exceeds" in bodies[oversized]
    if not_json in bodies:
        assert bodies[not_json].startswith("SCHEMA: not JSON")
    d = decisions(engine)
    assert d[f"bad-{feed.source}"].status == "REJECTED" and d[f"bad-{feed.source}"].reasons[0].startswith("SCHEMA")
    assert all(d[json.loads(p)["client_order_id"]].status == "FILLED" for p in good)
    assert decided(engine) == 24  # every message, garbage included, has exactly one recorded decision
    if isinstance(feed, StepFunctionsFeed):
        bad = [r for r in feed.wait_finished().values() if r["status"] == "FAILED"]
        assert len(bad) == 2 and {r["error"] for r in bad} == {"OrderRejected"}


def _inner(feed, body: str) -> str:
    """The published message inside what reached the DLQ (an SNS envelope is kept as received)."""
    if feed.source == "sns" and body.startswith("{") and '"Notification"' in body:
        return json.loads(body)["Message"]
    return body


def test_tick_from_the_source_when_decided_then_a_later_market_order_fills_at_it(feed, engine, symbol, run_sidecar):
    proc = run_sidecar()
    feed.publish([json.dumps({"kind": "tick", "symbol": symbol, "ltp": 26150.0}).encode()])
    wait_for(lambda: last_price(engine, symbol) == 26150.0, 30, f"the tick to move the last price\n{proc.tail()}")
    feed.publish([order(f"mkt-{feed.source}", symbol, order_type="MARKET", price=None)])
    _settled(feed, engine, 1, 30, proc)
    d = decisions(engine)[f"mkt-{feed.source}"]
    assert (d.status, d.fill_price) == ("FILLED", 26150.0)

