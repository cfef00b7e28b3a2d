"""sidecars/payload.py: how a source message becomes what the engine receives (every source)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.intake import MAX_PAYLOAD
from sidecars.payload import MAX_PARTS, shape, split_parts

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=20))
_objects = st.dictionaries(st.text(min_size=1, max_size=10), _scalars, max_size=5)


@given(st.binary(max_size=200).filter(lambda b: b.lstrip()[:1] != b"["), st.booleans())
def test_shape_when_plain_message_then_one_item_and_kind_from_the_mark(body, tick):
    assert shape(body, tick) == (None, "tick" if tick else "ingest")


@given(st.lists(_objects, min_size=1, max_size=20), st.booleans())
def test_shape_when_json_array_of_objects_then_one_part_per_object(objs, tick):
    parts, kind = shape(json.dumps(objs).encode(), tick)
    assert [json.loads(p) for p in parts] == objs
    assert kind == ("tick" if tick else "ingest")


def test_shape_when_array_too_long_or_not_objects_then_left_whole_for_the_engine_to_reject():
    assert shape(json.dumps([{}] * (MAX_PARTS + 1)).encode(), False) == (None, "ingest")
    assert shape(b"[1, 2]", False) == (None, "ingest")
    assert shape(b"[]", False) == (None, "ingest")
    assert shape(b"[ broken", False) == (None, "ingest")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=10)


@given(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), min_size=1, max_size=20))
def test_split_when_array_of_objects_then_each_part_is_its_element(items):
    data = json.dumps(items).encode()
    parts = split_parts(data, max_parts=100)
    assert parts is not None and [json.loads(p) for p in parts] == items


@given(json_values.filter(lambda v: not isinstance(v, list)))
def test_split_when_not_an_array_then_forwarded_whole(value):
    assert split_parts(json.dumps(value).encode(), max_parts=100) is None


@given(st.binary(max_size=200))
def test_split_when_arbitrary_bytes_then_never_raises(data):
    parts = split_parts(data, max_parts=100)
    assert parts is None or (len(parts) >= 1 and all(isinstance(p, bytes) for p in parts))


@pytest.mark.parametrize("data", [b"[]", b"  [ ]", b"[1, 2", json.dumps([{}] * (MAX_PARTS + 1)).encode(),
                                  json.dumps([{"pad": "x" * MAX_PAYLOAD}]).encode()],
                         ids=["empty", "empty-spaced", "truncated", "too-many", "oversized"])
def test_split_when_array_cannot_be_orders_then_forwarded_whole_for_the_engine_to_reject(data):
    assert split_parts(data, max_parts=100) is None
