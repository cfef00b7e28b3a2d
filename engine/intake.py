"""Intake: turn each wire item into an Order, a Tick, or a keyed SCHEMA rejection. Never raises.

An item is a msgpack map (from a Wojak client) or raw bytes of a source message (JSON, as a sidecar
received it). Whatever it is, it gets a key to record its decision under: its client_order_id when
one can be read, else the source message id, else a hash of its bytes - so a redelivered bad
message finds the decision recorded the first time.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import msgspec

from engine.models import Order, Reason, Tick, reason

_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_msgpack_order = msgspec.msgpack.Decoder(Order)
_msgpack_any = msgspec.msgpack.Decoder()
_json_order = msgspec.json.Decoder(Order)
_json_any = msgspec.json.Decoder()
_enc = msgspec.msgpack.Encoder()

MAX_PAYLOAD = 64 * 1024  # a source message larger than this is not an order
MAX_REMAINS_CHARS = 512  # what is kept of a bad item's fields (see protocol.MAX_ITEMS)
# msgspec raises UnicodeDecodeError, not DecodeError, for a msgpack string that is not UTF-8.
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError)


@dataclass(slots=True)
class Item:
    key: str  # client_order_id, or a synthetic key for garbage
    order: Order | None = None
    tick: Tick | None = None
    error: str | None = None  # SCHEMA reason when neither parsed
    content_hash: str = ""
    raw: dict | None = None  # what could be read of a bad item, for the record


def content_hash(order: Order) -> str:
    return hashlib.blake2b(_enc.encode(order), digest_size=12).hexdigest()


def _bytes_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def _garbage_key(msg_id: str | None, data: bytes) -> str:
    if msg_id and _ID.match(msg_id[:63]):
        return "!" + msg_id[:63]
    return "!h:" + _bytes_hash(data)


def _schema_error(e: Exception) -> str:
    return reason(Reason.SCHEMA, str(e)[:300])


def _order_item(order: Order) -> Item:
    return Item(order.client_order_id, order=order, content_hash=content_hash(order))


def parse(raw: bytes, msg_id: str | None = None, want_tick: bool = False) -> Item:
    """Parse one wire item (msgspec.Raw bytes of msgpack)."""
    if not want_tick:
        try:  # fast path: a well-formed msgpack order
            return _order_item(_msgpack_order.decode(raw))
        except _UNDECODABLE:
            pass
    try:
        obj = _msgpack_any.decode(raw)
    except _UNDECODABLE as e:
        return Item(_garbage_key(msg_id, bytes(raw)), error=_schema_error(e), content_hash=_bytes_hash(bytes(raw)))
    if isinstance(obj, (bytes, str)):
        return parse_payload(obj.encode() if isinstance(obj, str) else obj, msg_id, want_tick)
    return _from_object(obj, bytes(raw), msg_id, want_tick)


def parse_payload(data: bytes, msg_id: str | None = None, want_tick: bool = False) -> Item:
    """Parse a source message body (JSON)."""
    if len(data) > MAX_PAYLOAD:
        return Item(_garbage_key(msg_id, data), content_hash=_bytes_hash(data),
                    error=reason(Reason.SCHEMA, f"message of {len(data)} bytes exceeds {MAX_PAYLOAD}"))
    if not want_tick:
        try:
            return _order_item(_json_order.decode(data))
        except _UNDECODABLE:
            pass
    try:
        obj = _json_any.decode(data)
    except _UNDECODABLE as e:
        return Item(_garbage_key(msg_id, data), error=reason(Reason.SCHEMA, f"not JSON: {e}"[:300]),
                    content_hash=_bytes_hash(data))
    return _from_object(obj, data, msg_id, want_tick)


def _from_object(obj: object, data: bytes, msg_id: str | None, want_tick: bool) -> Item:
    if not isinstance(obj, dict):
        return Item(_garbage_key(msg_id, data), content_hash=_bytes_hash(data),
                    error=reason(Reason.SCHEMA, f"expected an object, got {type(obj).__name__}"))
    if want_tick or obj.get("kind") == "tick":
        try:
            return Item("", tick=msgspec.convert(obj, Tick))
        except msgspec.ValidationError as e:
            return Item(_garbage_key(msg_id, data), error=_schema_error(e), content_hash=_bytes_hash(data),
                        raw=_safe(obj))
    try:
        return _order_item(msgspec.convert(obj, Order))
    except msgspec.ValidationError as e:
        coid = obj.get("client_order_id")
        key = coid if isinstance(coid, str) and _ID.match(coid) else _garbage_key(msg_id, data)
        return Item(key, error=_schema_error(e), content_hash=_bytes_hash(data), raw=_safe(obj))


def _safe(obj: dict) -> dict:
    """A bounded, storable copy of what a bad message said (for the record, not for trading): at most
    20 fields of at most MAX_REMAINS_CHARS characters in all (so at most 4x that in UTF-8, however
    exotic the text), fields kept in the order sent until the room runs out. Integers msgpack cannot
    hold (beyond 64 bits) are kept as their text."""
    out: dict = {}
    room = MAX_REMAINS_CHARS
    for k, v in list(obj.items())[:20]:
        if isinstance(v, str):
            v = v[:256]
        elif isinstance(v, int) and not isinstance(v, bool) and not -2**63 <= v < 2**64:
            v = str(v)[:64]
        elif not (isinstance(v, (int, float, bool)) or v is None):
            continue
        key = str(k)[:64]
        room -= len(key) + (len(v) if isinstance(v, str) else 8)
        if room < 0:
            break
        out[key] = v
    return out
