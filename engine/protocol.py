"""The wire between sidecars and the engine: one msgpack frame per request, versioned.

A request names its kind and carries a batch of items:

    submit_order  items = orders (msgpack maps) or raw source payloads (bytes of JSON)
    tick          items = ticks (maps or JSON bytes)
    ingest        items = raw source payloads; each is an order, or a tick when its JSON says
                  "kind": "tick" (what a sidecar forwards when it cannot tell)
    get_order     args = {"client_order_id": ...}
    positions     args = {"account": ...} (optional)
    halt/resume   args = {"reason": ...} (optional)
    health        -
    get_checkpoint / set_checkpoint   args = {"key", "value"}: a source's durable position (e.g. a
                  Kinesis shard's last answered sequence number), kept in the engine's store

The answer carries the request's `id`, so a DEALER may keep many requests in flight. An item the
engine cannot parse is still answered, in its place, by a REJECTED/SCHEMA decision. Requests are
answered in the order sent, each after its batch commits; a read (`get_order`, `positions`) sees
every request sent before it on the same connection, also when the two share a batch.
"""
from __future__ import annotations

from typing import Any

import msgspec

VERSION = 1
# The error an engine that stands by (another holds the store's writer lease, engine/server.py)
# refuses every request but `health` with; sidecars stop receiving while they get it.
STANDBY = "STANDBY"
# Items one request may carry. A batch is journaled (and its intents logged) as one record that must
# fit a 4 MiB segment: with at most ~3.5 KiB recorded per item (a garbage item's stored remains and
# its reason are bounded, intake.py), 500 items and the rest of a batch stay under half of that.
# Sidecars send at most 50 per request; a larger request is refused whole (a bad request, with why).
MAX_ITEMS = 500
# A source's checkpoint (a Kinesis shard's sequence number is at most 128 digits), bounded likewise.
MAX_CHECKPOINT_KEY = 256
MAX_CHECKPOINT_VALUE = 4096
KINDS = frozenset({"submit_order", "tick", "ingest", "get_order", "positions", "halt", "resume", "health",
                   "get_checkpoint", "set_checkpoint"})


class Request(msgspec.Struct, omit_defaults=True):
    kind: str
    id: int = 0
    v: int = VERSION
    items: list[msgspec.Raw] = []
    # Optional source message ids, parallel to items: they key the decision for garbage that has no
    # usable client_order_id, so a redelivered bad message maps to the same recorded decision.
    msg_ids: list[str] | None = None
    args: dict[str, Any] = {}


class Response(msgspec.Struct, omit_defaults=True):
    id: int
    ok: bool = True
    v: int = VERSION
    error: str | None = None
    results: list[Any] | None = None  # Decision-shaped dicts, in item order
    data: Any = None


class _Items(msgspec.Struct):
    items: list[msgspec.Raw] = []


_enc = msgspec.msgpack.Encoder()
_req_dec = msgspec.msgpack.Decoder(Request)
_items_dec = msgspec.msgpack.Decoder(_Items)
_resp_dec = msgspec.msgpack.Decoder(Response)


def encode(obj: Any) -> bytes:
    return _enc.encode(obj)


def decode_request(frame: bytes) -> Request:
    return _req_dec.decode(frame)


def count_items(frame: bytes) -> int:
    """How many items a request frame carries, without decoding them (1 if it is not a request)."""
    try:
        return max(1, len(_items_dec.decode(frame).items))
    except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
        return 1


def decode_response(frame: bytes) -> Response:
    return _resp_dec.decode(frame)


def request(kind: str, id: int = 0, items: list | None = None, args: dict | None = None,
            msg_ids: list[str] | None = None) -> bytes:
    """Encode a request; items may be Structs, dicts or raw bytes payloads."""
    body: dict[str, Any] = {"kind": kind, "id": id, "v": VERSION}
    if items is not None:
        body["items"] = items
    if args:
        body["args"] = args
    if msg_ids is not None:
        body["msg_ids"] = msg_ids
    return _enc.encode(body)
