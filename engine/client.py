"""A small blocking client for the engine (CLI, tests, tools). Sidecars use sidecars/runtime.py.

One DEALER socket, one request at a time, answers matched by request id: `call()` returns the
engine's Response or raises EngineUnavailable after the timeout.
"""
from __future__ import annotations

import itertools
from typing import Any

import zmq

from engine import curve, protocol


class EngineUnavailable(ConnectionError):
    pass


class EngineClient:
    def __init__(self, endpoint: str, timeout_s: float = 5.0, ctx: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.ctx = ctx or zmq.Context.instance()
        self._ids = itertools.count(1)
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        curve.configure_client(sock, self.endpoint)
        sock.connect(self.endpoint)
        return sock

    def call(self, kind: str, items: list | None = None, args: dict | None = None,
             msg_ids: list[str] | None = None) -> protocol.Response:
        rid = next(self._ids)
        self.sock.send(protocol.request(kind, rid, items, args, msg_ids))
        while True:
            if not self.sock.poll(self.timeout_ms):
                # Reset the socket: a late answer must never be taken for the next request's.
                self.sock.close()
                self.sock = self._connect()
                raise EngineUnavailable(f"no answer from {self.endpoint} in {self.timeout_ms} ms")
            resp = protocol.decode_response(self.sock.recv())
            if resp.id == rid:
                return resp

    def submit(self, *orders: Any) -> list[dict]:
        return self.call("submit_order", list(orders)).results

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
