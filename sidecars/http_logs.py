"""Structured logs and request ids for the HTTP sidecar.

Every request gets an id: the client's `X-Request-ID` when it is a sane token (1-64 of
A-Za-z0-9._:-), else a fresh one. It is echoed in the response's `X-Request-ID`, written on the
request's log line, and passed to the engine as the message id of the body, so a garbage body's
recorded REJECTED decision can be found by it (`!<request id>`).

`JsonFormatter` writes one JSON object per line: ts, level, logger, msg and any `extra=` fields.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

log = logging.getLogger("wojak.sidecar.http")

_TOKEN = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def use_json_logs() -> None:
    """Switch every root handler (set up by the CLI) to JSON lines."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for h in root.handlers:
        h.setFormatter(JsonFormatter())


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k == b"x-request-id":
            candidate = v.decode("latin-1").strip()
            if _TOKEN.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestIds:
    """ASGI middleware: assign the request id, echo it, log one line per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope.get("headers", []))
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info("%s %s %d", scope["method"], scope["path"], status,
                     extra={"request_id": rid, "method": scope["method"], "path": scope["path"], "status": status,
                            "ms": round((time.perf_counter() - started) * 1000, 2)})
