"""A real moto server on 127.0.0.1 and the AWS resources the four AWS sidecars consume from it, for
tests and benchmarks alike.

    server = start_moto()                         # moto_server -H 127.0.0.1 -p <free port>
    feed = SqsFeed(server, "vol")                 # a queue + its DLQ; SnsFeed, StepFunctionsFeed, KinesisFeed
    feed.publish(payloads); feed.sidecar_env(); feed.outstanding(engine); feed.dead_letters()
    server.stop()

Each feed creates its resources under a unique name, so tests sharing one server never meet.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

REGION = "ap-south-1"
ACCOUNT = "123456789012"
_names = itertools.count(1)


class MotoUnavailable(RuntimeError):
    pass


def moto_binary() -> str | None:
    local = Path(sys.executable).parent / "moto_server"
    return str(local) if local.exists() else shutil.which("moto_server")


class MotoServer:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        """What a sidecar (or boto3 in a test) needs to reach this server and only this server."""
        return {"WOJAK_AWS_ENDPOINT_URL": self.url, "WOJAK_AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "WOJAK_AWS_MAX_ATTEMPTS": "3"}

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service, endpoint_url=self.url, region_name=REGION, aws_access_key_id="testing",
            aws_secret_access_key="testing", config=Config(retries={"mode": "standard", "max_attempts": 3},
                                                           max_pool_connections=20))

    def configure(self, settings: dict) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/config", data=json.dumps(settings).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_moto(timeout_s: float = 20.0, log_path: str | os.PathLike | None = None) -> MotoServer:
    """Start `moto_server` on a free loopback port and wait until it answers. Step Functions
    executions run for real (the callback pattern needs them)."""
    binary = moto_binary()
    if binary is None:
        raise MotoUnavailable("moto_server not found (pip install 'moto[server]==5.2.5')")
    port = free_port()
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    server = MotoServer(proc, port)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise MotoUnavailable(f"moto_server exited with {proc.returncode}")
        try:
            server.configure({"stepfunctions": {"execute_state_machine": True}})
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise MotoUnavailable(f"moto_server did not answer on port {port} in {timeout_s}s") from None
            time.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


# -- feeds: a source's resources and its broker-side view ------------------------------------------
class SqsFeed:
    """A queue (standard or FIFO) with an explicit DLQ, or with a redrive policy to its DLQ."""

    source = "sqs"
    prefix = "WOJAK_SQS"

    def __init__(self, server: MotoServer, name: str = "q", fifo: bool = False, visibility_s: int = 4,
                 redrive_max_receives: int | None = None) -> None:
        self.server = server
        self.sqs = server.client("sqs")
        self.fifo = fifo
        base = unique(name)
        suffix = ".fifo" if fifo else ""
        fifo_attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        self.dlq_url = self.sqs.create_queue(QueueName=f"{base}-dlq{suffix}", Attributes=fifo_attrs)["QueueUrl"]
        attrs = dict(fifo_attrs, VisibilityTimeout=str(visibility_s))
        self.redrive = redrive_max_receives is not None
        if self.redrive:
            dlq_arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"]
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn["QueueArn"],
                                                 "maxReceiveCount": str(redrive_max_receives)})
        self.queue_url = self.sqs.create_queue(QueueName=f"{base}{suffix}", Attributes=attrs)["QueueUrl"]
        self._ids = itertools.count()

    def sidecar_env(self) -> dict[str, str]:
        env = dict(self.server.env(), **{f"{self.prefix}_QUEUE_URL": self.queue_url})
        if not self.redrive:
            env[f"{self.prefix}_DLQ_URL"] = self.dlq_url
        return env

    def publish(self, payloads: list[bytes], group: str | None = None) -> None:
        """Send each payload as one message body (SendMessageBatch, 10 at a time, in order)."""
        for i in range(0, len(payloads), 10):
            entries = []
            for p in payloads[i:i + 10]:
                n = next(self._ids)
                e: dict[str, Any] = {"Id": str(n), "MessageBody": p.decode("utf-8", "replace")}
                if self.fifo:
                    e["MessageGroupId"] = group or "g"
                    e["MessageDeduplicationId"] = f"d{n}"
                entries.append(e)
            r = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            assert not r.get("Failed"), r["Failed"]

    def send_raw(self, body: str) -> None:
        """One message straight to the queue (for bodies no publisher of this source would produce)."""
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def outstanding(self, engine: Any = None) -> int:
        """The queue's own view: messages visible + in flight (not visible) + delayed."""
        a = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])["Attributes"]
        return sum(int(a.get(k, 0)) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                                              "ApproximateNumberOfMessagesDelayed"))

    def dead_letters(self, wait_s: float = 1.0) -> list[tuple[str, str | None]]:
        """(body, wojak-reason attribute) of everything in the DLQ, removed as read."""
        out, deadline = [], time.monotonic() + wait_s
        while True:
            msgs = self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                            MessageAttributeNames=["All"]).get("Messages", [])
            for m in msgs:
                reason = m.get("MessageAttributes", {}).get("wojak-reason", {}).get("StringValue")
                out.append((m["Body"], reason))
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=m["ReceiptHandle"])
            if not msgs and time.monotonic() >= deadline:
                return out
            if not msgs:
                time.sleep(0.1)


class SnsFeed(SqsFeed):
    """A topic with the queue subscribed (raw or enveloped delivery), queue policy for the topic."""

    source = "sns"
    prefix = "WOJAK_SNS"

    def __init__(self, server: MotoServer, name: str = "t", raw: bool = False, **kw: Any) -> None:
        super().__init__(server, name, **kw)
        self.sns = server.client("sns")
        self.topic_arn = self.sns.create_topic(Name=unique(name))["TopicArn"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url,
                                                  AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": self.topic_arn}}}]}
        self.sqs.set_queue_attributes(QueueUrl=self.queue_url, Attributes={"Policy": json.dumps(policy)})
        self.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn,
                           Attributes={"RawMessageDelivery": "true" if raw else "false"})

    def publish(self, payloads: list[bytes], group: str | None = None) -> None:
        for i in range(0, len(payloads), 10):
            entries = [{"Id": str(next(self._ids)), "Message": p.decode("utf-8", "replace")}
                       for p in payloads[i:i + 10]]
            r = self.sns.publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=entries)
            assert not r.get("Failed"), r["Failed"]


class StepFunctionsFeed(SqsFeed):
    """A state machine whose Gate state hands each order and its task token to the queue, then
    routes on the decision's status; garbage (SCHEMA) is caught into a Fail state."""

    source = "stepfunctions"
    prefix = "WOJAK_STEPFUNCTIONS"

    def __init__(self, server: MotoServer, name: str = "sm", **kw: Any) -> None:
        super().__init__(server, name, **kw)
        self.sfn = server.client("stepfunctions")
        definition = {"StartAt": "Gate", "States": {
            "Gate": {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                     "Parameters": {"QueueUrl": self.queue_url,
                                    "MessageBody": {"order.$": "$", "task_token.$": "$$.Task.Token"}},
                     "ResultPath": "$.decision",
                     "Catch": [{"ErrorEquals": ["SCHEMA", "DUPLICATE_ID_MISMATCH"], "ResultPath": "$.error",
                                "Next": "Garbage"}],
                     "Next": "Route"},
            "Route": {"Type": "Choice", "Choices": [
                {"Variable": "$.decision.status", "StringEquals": "FILLED", "Next": "Filled"},
                {"Variable": "$.decision.status", "StringEquals": "ESCALATED", "Next": "Escalated"}],
                "Default": "NotFilled"},
            "Filled": {"Type": "Pass", "Parameters": {"route": "filled", "decision.$": "$.decision"}, "End": True},
            "Escalated": {"Type": "Pass", "Parameters": {"route": "escalated", "decision.$": "$.decision"},
                          "End": True},
            "NotFilled": {"Type": "Pass", "Parameters": {"route": "not_filled", "decision.$": "$.decision"},
                          "End": True},
            "Garbage": {"Type": "Fail", "Error": "OrderRejected", "Cause": "the engine rejected the input as garbage"},
        }}
        self.arn = self.sfn.create_state_machine(name=unique(name), definition=json.dumps(definition),
                                                 roleArn=f"arn:aws:iam::{ACCOUNT}:role/wojak-sfn")["stateMachineArn"]
        self.executions: list[str] = []

    def publish(self, payloads: list[bytes], group: str | None = None) -> None:
        """One execution per payload (its input must be JSON: Step Functions checks it)."""
        for p in payloads:
            r = self.sfn.start_execution(stateMachineArn=self.arn, name=f"x{next(self._ids)}", input=p.decode())
            self.executions.append(r["executionArn"])

    def results(self) -> dict[str, dict]:
        """executionArn -> {"status", "output", "error"} of every execution started."""
        out = {}
        for arn in self.executions:
            d = self.sfn.describe_execution(executionArn=arn)
            out[arn] = {"status": d["status"], "output": json.loads(d["output"]) if d.get("output") else None,
                        "error": d.get("error")}
        return out

    def wait_finished(self, timeout_s: float = 30.0) -> dict[str, dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            res = self.results()
            if all(r["status"] != "RUNNING" for r in res.values()) or time.monotonic() > deadline:
                return res
            time.sleep(0.2)


class KinesisFeed:
    """A stream with `shards` shards and an SQS queue for its dead letters. The broker-side view of
    what is outstanding: records after each shard's checkpoint in the engine's store."""

    source = "kinesis"

    def __init__(self, server: MotoServer, name: str = "s", shards: int = 2) -> None:
        self.server = server
        self.kinesis = server.client("kinesis")
        self.sqs = server.client("sqs")
        self.stream = unique(name)
        self.kinesis.create_stream(StreamName=self.stream, ShardCount=shards)
        self.dlq_url = self.sqs.create_queue(QueueName=f"{self.stream}-dlq")["QueueUrl"]
        self.prefix = f"kinesis:{self.stream}"

    def sidecar_env(self) -> dict[str, str]:
        return dict(self.server.env(), WOJAK_KINESIS_STREAM=self.stream, WOJAK_KINESIS_DLQ_URL=self.dlq_url,
                    WOJAK_KINESIS_IDLE_POLL_S="0.05", WOJAK_KINESIS_SHARD_REFRESH_S="1")

    def publish(self, payloads: list[bytes], key: Any = None) -> list[dict]:
        """put_records, 500 at a time; the partition key is `key(payload)` or the payload's account."""
        out = []
        for i in range(0, len(payloads), 500):
            recs = [{"Data": p, "PartitionKey": key(p) if key else _account_or_hash(p)} for p in payloads[i:i + 500]]
            r = self.kinesis.put_records(StreamName=self.stream, Records=recs)
            assert not r.get("FailedRecordCount"), r
            out += r["Records"]
        return out

    def send_raw(self, body: str) -> None:
        self.publish([body.encode("utf-8", "replace")])

    def shards(self) -> list[dict]:
        return self.kinesis.list_shards(StreamName=self.stream)["Shards"]

    def outstanding(self, engine: Any) -> int:
        """Records each open shard holds after its checkpoint (a SHARD_END shard holds none)."""
        store = engine.store()
        try:
            total = 0
            for s in self.shards():
                cp = store.get_checkpoint(f"{self.prefix}:{s['ShardId']}")
                if cp == "SHARD_END":
                    continue
                kw = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": cp} if cp \
                    else {"ShardIteratorType": "TRIM_HORIZON"}
                it = self.kinesis.get_shard_iterator(StreamName=self.stream, ShardId=s["ShardId"], **kw)["ShardIterator"]
                total += len(self.kinesis.get_records(ShardIterator=it, Limit=10000)["Records"])
            return total
        finally:
            store.close()

    def dead_letters(self, wait_s: float = 1.0) -> list[tuple[str, str | None]]:
        """(the record's data, wojak-reason) of everything in the DLQ, removed as read."""
        out, deadline = [], time.monotonic() + wait_s
        while True:
            msgs = self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10,
                                            MessageAttributeNames=["All"]).get("Messages", [])
            for m in msgs:
                body = json.loads(m["Body"])
                data = base64.b64decode(body["data_base64"]).decode("utf-8", "replace")
                out.append((data, m.get("MessageAttributes", {}).get("wojak-reason", {}).get("StringValue")))
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=m["ReceiptHandle"])
            if not msgs and time.monotonic() >= deadline:
                return out
            if not msgs:
                time.sleep(0.1)


def _account_or_hash(payload: bytes) -> str:
    try:
        obj = json.loads(payload)
        if isinstance(obj, dict) and isinstance(obj.get("account"), str):
            return obj["account"]
    except ValueError:
        pass
    return zlib.crc32(payload).to_bytes(4, "big").hex()


FEEDS = {"sqs": SqsFeed, "sns": SnsFeed, "stepfunctions": StepFunctionsFeed, "kinesis": KinesisFeed}
