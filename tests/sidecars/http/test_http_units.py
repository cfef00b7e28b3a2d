"""The sidecar's pure helpers: reading the field out of msgspec's messages, the listen address."""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.models import Order
from sidecars.http import parse_listen
from sidecars.http_bridge import schema_error
from sidecars.settings import SettingsError

BASE = {"client_order_id": "h-1", "symbol": "NIFTYFUT", "side": "BUY", "quantity": 65, "price": 100.0}
FIELDS = ["client_order_id", "symbol", "side", "quantity", "order_type", "price", "product", "account", "strategy"]
BAD_VALUES = st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                             max_size=1), st.booleans())


@given(field=st.sampled_from(FIELDS), value=BAD_VALUES)
def test_schema_error_when_any_field_has_a_wrong_type_then_names_that_field(field, value):
    body = msgspec.json.encode(dict(BASE, **{field: value}))
    with pytest.raises(msgspec.ValidationError) as e:
        msgspec.json.decode(body, type=Order)
    err = schema_error(f"SCHEMA: {e.value}")
    assert err == {"error": "SCHEMA", "field": field, "detail": str(e.value)}


@given(field=st.sampled_from(["client_order_id", "symbol", "side", "quantity"]))
def test_schema_error_when_a_required_field_is_missing_then_names_it(field):
    body = msgspec.json.encode({k: v for k, v in BASE.items() if k != field})
    with pytest.raises(msgspec.ValidationError) as e:
        msgspec.json.decode(body, type=Order)
    assert schema_error(f"SCHEMA: {e.value}")["field"] == field


def test_schema_error_when_whole_body_is_wrong_then_no_field():
    assert schema_error("SCHEMA: not JSON: JSON is malformed")["field"] is None
    assert schema_error("SCHEMA: expected an object, got list")["field"] is None


@pytest.mark.parametrize("listen, expected", [("127.0.0.1:8080", ("127.0.0.1", 8080)),
                                              ("[::1]:9000", ("::1", 9000)), ("0.0.0.0:0", ("0.0.0.0", 0))])
def test_parse_listen_when_valid_then_host_and_port(listen, expected):
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "localhost:", ":80", "host:99999", "host:http"])
def test_parse_listen_when_malformed_then_settings_error(listen):
    with pytest.raises(SettingsError):
        parse_listen(listen)
