"""Step Functions: a real state machine in moto waits on the sidecar's answer and branches on it."""
from __future__ import annotations

import json

from aws_helpers import InProcess, decided, order, wait_for
from sidecars.sqs import SqsSettings
from sidecars.stepfunctions import StepFunctionsSource
from tests.support.moto_server import StepFunctionsFeed


def test_workflow_when_engine_decides_then_choice_routes_on_the_decision(moto, engine, symbol):
    feed = StepFunctionsFeed(moto, "route")
    inputs = [order("wf-fill", symbol),
              order("wf-freeze", symbol, lots=28),                       # 1,820 units > NIFTY freeze 1,800
              order("wf-unknown", "NOPE26JANFUT"),                         # REJECTED, but a real order
              json.dumps({"client_order_id": "wf-garbage", "side": "UP"}).encode()]
    feed.publish(inputs)
    source = StepFunctionsSource(feed.sqs, feed.sfn, SqsSettings(feed.queue_url, feed.dlq_url))
    with InProcess(source, engine.endpoint):
        wait_for(lambda: decided(engine) == 4, 30, "4 decisions")
        results = feed.wait_finished()
        wait_for(lambda: feed.outstanding() == 0, 15, "an empty queue")
    by_order = dict(zip(["fill", "freeze", "unknown", "garbage"], results.values()))
    assert by_order["fill"]["status"] == "SUCCEEDED" and by_order["fill"]["output"]["route"] == "filled"
    assert by_order["fill"]["output"]["decision"]["fill_price"] == 26000.0
    assert by_order["freeze"]["output"]["route"] == "escalated"
    assert by_order["freeze"]["output"]["decision"]["reasons"][0].startswith("QTY_ABOVE_FREEZE")
    assert by_order["unknown"]["output"]["route"] == "not_filled"
    assert by_order["unknown"]["output"]["decision"]["reasons"][0].startswith("UNKNOWN_SYMBOL")
    assert by_order["garbage"]["status"] == "FAILED" and by_order["garbage"]["error"] == "OrderRejected"
    failed = [e["taskFailedEventDetails"] for e in
              feed.sfn.get_execution_history(executionArn=feed.executions[3])["events"] if e["type"] == "TaskFailed"]
    assert failed and failed[0]["error"] == "SCHEMA"
    assert feed.dead_letters(wait_s=0.2) == []  # the workflow took the failure: nothing in the DLQ


def test_task_message_when_redelivered_after_answer_then_deleted_without_a_second_answer(moto, engine, symbol):
    feed = StepFunctionsFeed(moto, "again")
    feed.publish([order("wf-once", symbol)])
    body = wait_for(lambda: feed.sqs.receive_message(QueueUrl=feed.queue_url, WaitTimeSeconds=1).get("Messages"),
                      10, "the task message")[0]
    # answered already (e.g. by a sidecar that died before its delete), then redelivered
    token = json.loads(body["Body"])["task_token"]
    feed.sfn.send_task_success(taskToken=token, output=json.dumps({"status": "FILLED"}))
    feed.sqs.change_message_visibility(QueueUrl=feed.queue_url, ReceiptHandle=body["ReceiptHandle"], VisibilityTimeout=0)
    source = StepFunctionsSource(feed.sqs, feed.sfn, SqsSettings(feed.queue_url, feed.dlq_url))
    with InProcess(source, engine.endpoint) as run:
        wait_for(lambda: feed.outstanding() == 0, 20, "the message deleted")
    assert run.runner.settled["ack"] == 1
    assert feed.wait_finished()[feed.executions[0]]["status"] == "SUCCEEDED"
