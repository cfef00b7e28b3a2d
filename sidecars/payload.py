"""What one source message sends to the engine: its body whole, or the orders of a batch message.

A message whose body is a JSON array of up to `MAX_PARTS` objects carries several orders (or ticks):
each item goes to the engine as a part, and the message is settled once every part is answered.
Anything else goes whole, and the engine judges it (garbage gets its one SCHEMA decision).
"""
from __future__ import annotations

import msgspec

from engine.intake import MAX_PAYLOAD

MAX_PARTS = 100
_items = msgspec.json.Decoder(list[msgspec.Raw])


def split_parts(body: bytes, max_parts: int = MAX_PARTS) -> list[bytes] | None:
    """The items of a JSON-array body, or None to forward the body whole."""
    if len(body) > MAX_PAYLOAD or body.lstrip()[:1] != b"[":
        return None
    try:
        items = _items.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not items or len(items) > max_parts:
        return None
    parts = [bytes(item) for item in items]
    return parts if all(p[:1] == b"{" for p in parts) else None


def shape(body: bytes, tick: bool, max_parts: int = MAX_PARTS) -> tuple[list[bytes] | None, str]:
    """(parts, kind): kind "tick" when the source marked the message as a tick, else "ingest"
    (the engine tells an order from a tick by its JSON)."""
    return split_parts(body, max_parts), "tick" if tick else "ingest"
