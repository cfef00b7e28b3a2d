"""`wojak sidecar stepfunctions`: the engine as a step of a Step Functions workflow, through the
task-token callback pattern. The workflow's state hands the order and its task token to an SQS
queue and waits; the sidecar gets the engine's decision and answers the workflow with it, so the
workflow branches on the engine's decision.

The state (Amazon States Language) that feeds this sidecar:

    "Gate": {
      "Type": "Task",
      "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
      "Parameters": {"QueueUrl": "<the queue>",
                     "MessageBody": {"order.$": "$", "task_token.$": "$$.Task.Token"}},
      "ResultPath": "$.decision",                  (keeps the order, adds the decision)
      "HeartbeatSeconds": 60,                      (optional: the sidecar heartbeats slow answers)
      "Catch": [{"ErrorEquals": ["SCHEMA", "DUPLICATE_ID_MISMATCH"], "Next": "Garbage"}],
      "Next": "Route"}
    "Route": {"Type": "Choice", "Choices": [
      {"Variable": "$.decision.status", "StringEquals": "FILLED", "Next": "..."}, ...]}

So the message body is {"order": <the state's input: one order, a tick, or an array of orders>,
"task_token": "<token>"}. The answer:
- a recorded decision (FILLED, ESCALATED, FAILED, REJECTED for a risk reason, ACCEPTED for a tick)
  -> SendTaskSuccess with the decision as output ({"parts": [...]} for an array). These are business
  outcomes the workflow routes on ($.status), not failures of the step.
- REJECTED as garbage (reason SCHEMA... or DUPLICATE_ID_MISMATCH...: the input can never be an
  order) -> SendTaskFailure(error=<the reason code>, cause=<the full reason>): the workflow's Catch.
- no decision (engine down, PENDING) -> the SQS message is requeued; the workflow keeps waiting.
Then the SQS message is deleted. If the workflow no longer waits (TaskTimedOut, InvalidToken,
TaskDoesNotExist: timed out, or answered on an earlier delivery whose delete was lost) the answer
has nobody to go to; the decision is in the engine's store and the message is deleted. A body with
no task token cannot answer a workflow: it is dead-lettered like any malformed SQS message.

Settings: the SQS sidecar's (sidecars/sqs.py), prefixed WOJAK_STEPFUNCTIONS_:

    WOJAK_STEPFUNCTIONS_QUEUE_URL             the queue the state sends to (required)
    WOJAK_STEPFUNCTIONS_DLQ_URL               explicit DLQ for bodies without a task token (optional;
                                              else the queue's redrive policy)
    WOJAK_STEPFUNCTIONS_VISIBILITY_TIMEOUT_S  (default: the queue's)
    WOJAK_STEPFUNCTIONS_REQUEUE_DELAY_S       (default 0)

IAM for the sidecar's role: the SQS sidecar's, plus states:SendTaskSuccess, states:SendTaskFailure,
states:SendTaskHeartbeat on the state machine. (Activity workers - GetActivityTask - are the other
callback pattern; this one keeps SQS's redelivery, so a dead sidecar loses nothing.)
"""
from __future__ import annotations

import logging
from typing import Any

import msgspec

from engine.config import Config
from engine.models import reason_code
from sidecars import aws_common
from sidecars.payload import split_parts
from sidecars.runtime import Message
from sidecars.sqs import Receipt, SqsSettings, SqsSource

log = logging.getLogger("wojak.sidecar.stepfunctions")

_json_any = msgspec.json.Decoder()
# The workflow is no longer waiting for this token: nobody to answer.
TOKEN_GONE = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})


def unwrap(body: bytes) -> tuple[bytes, list[bytes] | None, str | None]:
    """(the order payload, its parts if an array, the task token) from a task message. A body that
    is not a task message comes back whole, with no token."""
    try:
        obj = _json_any.decode(body)
    except msgspec.DecodeError:
        return body, None, None
    if not (isinstance(obj, dict) and isinstance(obj.get("task_token"), str) and obj["task_token"] and "order" in obj):
        return body, None, None
    payload = msgspec.json.encode(obj["order"])
    return payload, split_parts(payload), obj["task_token"]


class StepFunctionsSource(SqsSource):
    name = "stepfunctions"
    env_prefix = "WOJAK_STEPFUNCTIONS"

    def __init__(self, sqs: Any, sfn: Any, settings: SqsSettings) -> None:
        super().__init__(sqs, settings)
        self.sfn = sfn

    @classmethod
    def from_env(cls) -> "StepFunctionsSource":
        return cls(aws_common.client("sqs"), aws_common.client("stepfunctions"), SqsSettings.from_env(cls.env_prefix))

    def decode(self, m: dict, receipt: Receipt) -> Message:
        payload, parts, token = unwrap(receipt.body.encode())
        receipt.extra = token
        return Message(payload, m["MessageId"], receipt, parts=parts)

    def ack(self, msg: Message, decision: dict) -> None:
        token = msg.handle.extra
        if token is not None:
            self._answer(msg, "send_task_success", taskToken=token, output=msgspec.json.encode(decision).decode())
        super().ack(msg, decision)

    def dead_letter(self, msg: Message, reason: str, decision: dict) -> None:
        token = msg.handle.extra
        if token is not None and self._answer(msg, "send_task_failure", taskToken=token,
                                              error=reason_code(reason)[:256], cause=reason[:32768]):
            super().ack(msg, decision)  # the workflow took the failure: it is the dead-letter path
            return
        super().dead_letter(msg, reason, decision)

    def on_extend(self, msgs: list[Message]) -> None:
        for m in msgs:
            if m.handle.extra is not None:
                try:
                    self.sfn.send_task_heartbeat(taskToken=m.handle.extra)
                except Exception as e:
                    log.info("task heartbeat for %s failed: %s", m.msg_id, e)

    def _answer(self, msg: Message, call: str, **kw: Any) -> bool:
        """True if the workflow took the answer, False if it no longer waits; raises on anything
        else (the runtime logs it and SQS redelivers the message, to be answered again)."""
        try:
            getattr(self.sfn, call)(**kw)
            return True
        except Exception as e:
            if aws_common.error_code(e) in TOKEN_GONE:
                log.warning("%s for %s: workflow no longer waits (%s)", call, msg.msg_id, aws_common.error_code(e))
                return False
            raise


def main(cfg: Config) -> int:
    return aws_common.run(cfg, "stepfunctions", StepFunctionsSource.from_env)
