"""The AWS sidecars' message parsing: envelopes, task messages, several orders in one message."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from sidecars import aws_common, sns, stepfunctions

ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
orders = st.fixed_dictionaries({"client_order_id": ids, "side": st.sampled_from(["BUY", "SELL"]),
                                "quantity": st.integers(1, 10_000), "symbol": st.text(min_size=1, max_size=30)})


@given(orders)
def test_sns_unwrap_when_enveloped_then_the_published_message_and_its_id(o):
    msg = json.dumps(o)
    env = json.dumps({"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:x:1:t", "Message": msg})
    assert sns.unwrap(env.encode()) == (msg.encode(), "m-1")


@given(st.one_of(orders.map(json.dumps), st.text(max_size=200)))
def test_sns_unwrap_when_raw_then_the_body_untouched(body):
    raw = body.encode()
    assert sns.unwrap(raw) == (raw, None)


@given(orders, st.text(min_size=1, max_size=50))
def test_stepfunctions_unwrap_when_task_message_then_order_and_token(o, token):
    payload, parts, tok = stepfunctions.unwrap(json.dumps({"order": o, "task_token": token}).encode())
    assert json.loads(payload) == o and parts is None and tok == token


@given(st.lists(orders, min_size=1, max_size=5))
def test_stepfunctions_unwrap_when_order_is_an_array_then_one_part_each(os_):
    _, parts, tok = stepfunctions.unwrap(json.dumps({"order": os_, "task_token": "t"}).encode())
    assert [json.loads(p) for p in parts] == os_ and tok == "t"


@given(st.one_of(st.binary(max_size=300), orders.map(lambda o: json.dumps(o).encode())))
def test_stepfunctions_unwrap_when_no_token_then_body_whole_and_no_token(body):
    assert stepfunctions.unwrap(body) == (body, None, None)
