"""Kinesis specifics: order within a shard, checkpoints and resuming after them, resharding, expired
iterators - against the real moto server and a real engine holding the checkpoints."""
from __future__ import annotations

import json

from botocore.awsrequest import AWSResponse

from aws_helpers import InProcess, decided, decisions, order, received_ids, wait_for
from sidecars.kinesis import EngineCheckpoints, KinesisSource
from sidecars.link import EngineLink
from tests.support.engine_proc import EngineProcess
from tests.support.moto_server import KinesisFeed


def _source(feed: KinesisFeed, engine, kinesis=None) -> KinesisSource:
    return KinesisSource(kinesis or feed.kinesis, feed.stream, EngineCheckpoints(EngineLink(engine.endpoint)),
                         dlq_url=feed.dlq_url, sqs=feed.sqs, idle_poll_s=0.05, refresh_s=1.0)


def _checkpoints(engine, feed: KinesisFeed) -> dict[str, str | None]:
    store = engine.store()
    try:
        return {s["ShardId"]: store.get_checkpoint(f"{feed.prefix}:{s['ShardId']}") for s in feed.shards()}
    finally:
        store.close()


def test_two_shards_when_each_account_alternates_then_order_within_each_shard_is_kept(moto, tmp_path, symbol):
    # one lot max per account: BUY, SELL, BUY, ... all fill only if every account is decided in order
    eng = EngineProcess(tmp_path / "eng", risk={"max_orders_per_second": 1_000_000, "max_position_lots": 1},
                        broker={"fill_probability": 1.0}).start()
    try:
        with eng.client() as c:
            c.call("tick", [{"symbol": symbol, "ltp": 26000.0}])
        feed = KinesisFeed(moto, "order", shards=2)
        accounts = [f"k{j}" for j in range(6)]
        payloads = [order(f"{a}-{i}", symbol, "BUY" if i % 2 == 0 else "SELL", account=a)
                    for i in range(40) for a in accounts]
        put = feed.publish(payloads)
        assert len({r["ShardId"] for r in put}) == 2, "the accounts should spread over both shards"
        with InProcess(_source(feed, eng), eng.endpoint):
            wait_for(lambda: decided(eng) == 240, 40, "240 decisions")
            wait_for(lambda: feed.outstanding(eng) == 0, 15, "checkpoints at the end of both shards")
        d = decisions(eng)
        assert {x.status for x in d.values()} == {"FILLED"}, {k: x.reasons for k, x in d.items() if x.status != "FILLED"}
        for a in accounts:
            ts = [d[f"{a}-{i}"].ts for i in range(40)]
            assert ts == sorted(ts), f"account {a} decided out of order"
        last = {}
        for r in put:
            last[r["ShardId"]] = max(int(r["SequenceNumber"]), last.get(r["ShardId"], 0))
        assert {k: int(v) for k, v in _checkpoints(eng, feed).items()} == last
    finally:
        eng.stop()


def test_restart_when_checkpointed_then_resumes_after_the_last_answered_record(moto, engine, symbol):
    feed = KinesisFeed(moto, "resume", shards=2)
    feed.publish([order(f"rs-{i}", symbol, account=f"r{i % 4}") for i in range(40)])
    with InProcess(_source(feed, engine), engine.endpoint):
        wait_for(lambda: decided(engine) == 40, 30, "40 decisions")
    assert all(_checkpoints(engine, feed).values()), "close() must leave a checkpoint per shard"
    feed.publish([order(f"rs-new-{i}", symbol, account=f"r{i % 4}") for i in range(6)])
    second = _source(feed, engine)
    seen = received_ids(second)
    with InProcess(second, engine.endpoint):
        wait_for(lambda: decided(engine) == 46, 30, "46 decisions")
        wait_for(lambda: feed.outstanding(engine) == 0, 15, "nothing after the checkpoints")
    assert len(seen) == 6, f"re-read {len(seen) - 6} records answered before the restart"
    assert all(v == 1 for v in engine.broker_calls().values())


def test_shard_split_mid_stream_when_children_appear_then_parent_finished_and_children_read(moto, engine, symbol):
    feed = KinesisFeed(moto, "split", shards=1)
    first = [order(f"sp-{i}", symbol, account=f"p{i % 5}") for i in range(60)]
    second = [order(f"sp2-{i}", symbol, account=f"p{i % 5}") for i in range(60)]
    feed.publish(first)
    source = _source(feed, engine)
    with InProcess(source, engine.endpoint):
        wait_for(lambda: decided(engine) == 60, 30, "the first 60 decisions")
        parent = feed.shards()[0]
        feed.kinesis.split_shard(StreamName=feed.stream, ShardToSplit=parent["ShardId"],
                                 NewStartingHashKey=str(2 ** 127))
        feed.publish(second)
        wait_for(lambda: decided(engine) == 120, 30, "120 decisions")
        wait_for(lambda: feed.outstanding(engine) == 0, 15, "every shard checkpointed to its end")
        children = [s["ShardId"] for s in feed.shards() if s.get("ParentShardId") == parent["ShardId"]]
        wait_for(lambda: all(source.shards.get(c) and source.shards[c].state == "reading" for c in children), 10,
                   "the children to be opened once the parent is finished")
    cps = _checkpoints(engine, feed)
    assert cps[parent["ShardId"]] == "SHARD_END" and len(children) == 2
    # (moto 5.2.5 re-puts a split shard's records, and every later record, into the closed parent:
    # the children stay empty there; on AWS the new records land in the children, read from TRIM_HORIZON)
    assert all(v == 1 for v in engine.broker_calls().values())  # re-homed records are answered, not re-executed


def test_expired_iterator_when_get_records_refused_then_reopened_after_the_last_read(moto, engine, symbol):
    feed = KinesisFeed(moto, "expired", shards=1)
    kinesis = moto.client("kinesis")
    calls = {"n": 0, "refused": 0}

    def expire_second_read(request, **_):
        # moto never expires iterators; AWS does after 5 minutes: answer the second GetRecords as AWS would
        calls["n"] += 1
        if calls["n"] == 2:
            calls["refused"] += 1
            body = json.dumps({"__type": "ExpiredIteratorException", "message": "Iterator expired"}).encode()
            return AWSResponse(request.url, 400, {"x-amzn-ErrorType": "ExpiredIteratorException"}, _Raw(body))
        return None

    kinesis.meta.events.register("before-send.kinesis.GetRecords", expire_second_read)
    source = _source(feed, engine, kinesis)
    source.max_records = 10
    seen = received_ids(source)
    feed.publish([order(f"ex-{i}", symbol, account=f"e{i % 3}") for i in range(30)])
    with InProcess(source, engine.endpoint):
        wait_for(lambda: decided(engine) == 30, 30, "30 decisions")
        wait_for(lambda: feed.outstanding(engine) == 0, 15, "the checkpoint at the end")
    assert calls["refused"] == 1
    assert len(seen) == len(set(seen)) == 30, "records skipped or read twice across the new iterator"


class _Raw:
    """The raw body botocore reads from an HTTP response."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_):
        yield self.data
