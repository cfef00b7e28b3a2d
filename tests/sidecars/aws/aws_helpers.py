"""Helpers for the AWS sidecar tests: orders to publish, a Source run in-process; the waits and the
engine's record come from the shared sidecar support (re-exported here for the suite's modules)."""
from __future__ import annotations

import json
from typing import Any

from tests.support.sidecar_fixtures import decided, decisions, wait_for

__all__ = ["InProcess", "decided", "decisions", "order", "received_ids", "stream", "wait_for"]


def order(coid: str, symbol: str, side: str = "BUY", account: str = "acct", lots: int = 1,
          order_type: str = "LIMIT", price: float | None = 26000.0) -> bytes:
    o: dict[str, Any] = {"client_order_id": coid, "symbol": symbol, "side": side, "quantity": 65 * lots,
                         "order_type": order_type, "account": account}
    if price is not None and order_type == "LIMIT":
        o["price"] = price
    return json.dumps(o).encode()


def stream(n: int, symbol: str, prefix: str) -> list[bytes]:
    """n valid orders over 20 accounts, each account alternating BUY/SELL (positions stay small)."""
    return [order(f"{prefix}-{i}", symbol, "BUY" if (i // 20) % 2 == 0 else "SELL", f"a{i % 20}") for i in range(n)]


class InProcess:
    """A Source driven by the runtime's Runner on a thread, linked to a real engine (for tests that
    look inside the adapter: what it received, what it checkpointed)."""

    def __init__(self, source, engine_endpoint: str) -> None:
        import threading

        from sidecars.link import EngineLink
        from sidecars.runtime import Runner

        self.source = source
        self.link = EngineLink(engine_endpoint)
        self.runner = Runner(source, self.link)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)

    def __enter__(self) -> "InProcess":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.runner.stop()
        self.thread.join(40)
        self.link.close()


def received_ids(source) -> list[str]:
    """Wrap source.receive to record every msg_id it hands out (in order)."""
    seen: list[str] = []
    inner = source.receive

    def receive(max_messages: int, timeout_s: float):
        msgs = inner(max_messages, timeout_s)
        seen.extend(m.msg_id for m in msgs)
        return msgs

    source.receive = receive
    return seen
