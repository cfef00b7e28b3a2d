"""The HTTP sidecar's routes (Starlette). Every answer about an order is the engine's recorded one.

    POST /v1/orders           one order (JSON)  -> 200 decision | 400 SCHEMA | 409 id reused | 503 retry
    POST /v1/ticks            a tick or a list  -> 202 | 400 | 503
    GET  /v1/orders/{id}      the decision      -> 200 | 404
    GET  /v1/positions        positions with P&L (?account=)
    POST /v1/halt, /v1/resume kill switch, `Authorization: Bearer <token>` -> 200 | 401
    GET  /healthz             engine reachable and deciding? -> 200 | 503 (unreachable, or standby)
    GET  /metrics             Prometheus text

Status codes are the contract a client retries on: 503 always carries `Retry-After` and means no
decision was given (resending the same order is safe: the engine answers a resend by its
client_order_id, with `"duplicate": true` if it had decided after all). 400 means the body can
never be an order; the engine has recorded that REJECTED/SCHEMA decision, under the body's
client_order_id when it had a usable one, else under `!<request id>`.
"""
from __future__ import annotations

import asyncio
import hmac
import re
import time
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.models import Order, Tick
from sidecars import metrics
from sidecars.http_bridge import Bridge, EngineUnavailable, schema_error
from sidecars.link import EngineLink, Outcome

SOURCE = "http"
RETRY_AFTER_S = 1
_order_json = msgspec.json.Decoder(Order)
_ticks_json = msgspec.json.Decoder(Tick | list[Tick])
_any_json = msgspec.json.Decoder()
# A client_order_id, or the `!...` key under which the engine records a body without a usable one.
_DECISION_KEY = re.compile(r"^!?[A-Za-z0-9._:\-]{1,64}$")


class BodyTooLarge(Exception):
    pass


def _error(status: int, error: str, detail: str, **more: Any) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": error, "detail": detail, **more}, status, headers=headers)


def _unavailable(detail: str) -> JSONResponse:
    return _error(503, "ENGINE_UNAVAILABLE", f"{detail}; nothing decided, safe to retry")


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused (BodyTooLarge) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes exceeds {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class HttpSidecar:
    """The app's state: one bridge to the engine, the admin token, the body limit."""

    def __init__(self, link: EngineLink, timeout_s: float, max_body_bytes: int, admin_token: str | None) -> None:
        self.link = link
        self.bridge = Bridge(link, timeout_s)
        self.max_body = max_body_bytes
        self.admin_token = admin_token

    def app(self) -> Starlette:
        routes = [
            Route("/v1/orders", self.post_order, methods=["POST"]),
            Route("/v1/orders/{client_order_id}", self.get_order, methods=["GET"]),
            Route("/v1/ticks", self.post_ticks, methods=["POST"]),
            Route("/v1/positions", self.positions, methods=["GET"]),
            Route("/v1/halt", self.halt, methods=["POST"]),
            Route("/v1/resume", self.resume, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        return Starlette(routes=routes)

    async def _read(self, request: Request) -> bytes | Response:
        try:
            return await _body(request, self.max_body)
        except BodyTooLarge as e:
            return _error(413, "BODY_TOO_LARGE", str(e))
        except ClientDisconnect:
            return Response(status_code=400)

    # -- orders ---------------------------------------------------------------------------------
    async def post_order(self, request: Request) -> Response:
        started = time.monotonic()
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        try:
            item: Any = _order_json.decode(body)  # valid: the engine's fast path (a msgpack map)
        except msgspec.DecodeError:
            item = body  # the engine parses it again and records the REJECTED/SCHEMA decision
            if _is_tick(body):  # as an order it would be recorded as a tick: refuse it here
                return JSONResponse({"error": "SCHEMA", "field": "kind",
                                     "detail": "this is a tick: POST it to /v1/ticks"}, 400)
        metrics.received(SOURCE)
        try:
            outcome = await self.bridge.submit(item, "submit_order", msg_id=request.state.request_id)
        except EngineUnavailable as e:
            return self._settled("requeue", started, _unavailable(str(e)))
        return self._order_answer(outcome, started)

    def _order_answer(self, outcome: Outcome, started: float) -> Response:
        d = outcome.decision
        if not outcome.recorded:  # an error, or PENDING at the broker: not decided
            why = outcome.error or ("; ".join(d.get("reasons", [])) if d else "")
            return self._settled("requeue", started, _unavailable(why or "no decision"))
        metrics.decision(SOURCE, d["status"])
        dead = outcome.dead_letter_reason
        if dead is None:  # the engine omits defaults; a client gets every documented field
            d.setdefault("reasons", [])
            d.setdefault("duplicate", False)
            return self._settled("ack", started, JSONResponse(d))
        if dead.startswith("DUPLICATE_ID_MISMATCH"):
            return self._settled("dead_letter", started, _error(
                409, "DUPLICATE_ID_MISMATCH", dead, client_order_id=d.get("client_order_id")))
        err = schema_error(dead)
        key = d.get("client_order_id", "")
        return self._settled("dead_letter", started, JSONResponse({**err, "recorded_as": key}, 400))

    @staticmethod
    def _settled(outcome: str, started: float, response: Response) -> Response:
        metrics.settled(SOURCE, outcome, time.monotonic() - started)
        return response

    async def get_order(self, request: Request) -> Response:
        coid = request.path_params["client_order_id"]
        if not _DECISION_KEY.match(coid):
            return JSONResponse({"error": "SCHEMA", "field": "client_order_id",
                                 "detail": "expected 1-64 of A-Za-z0-9._:- (or a `!` key of a rejected body)"}, 400)
        try:
            d = await self.bridge.request("get_order", {"client_order_id": coid})
        except EngineUnavailable as e:
            return _unavailable(str(e))
        if d is None:
            return _error(404, "NOT_FOUND", f"no decision for client_order_id={coid}")
        return JSONResponse(d)

    # -- ticks ----------------------------------------------------------------------------------
    async def post_ticks(self, request: Request) -> Response:
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        try:
            parsed = _ticks_json.decode(body)
        except msgspec.DecodeError as e:
            return JSONResponse(schema_error(f"SCHEMA: {e}"), 400)
        ticks = parsed if isinstance(parsed, list) else [parsed]
        if not ticks:
            return JSONResponse({"error": "SCHEMA", "field": None, "detail": "an empty list of ticks"}, 400)
        try:
            outcomes = await asyncio.gather(*(self.bridge.submit(t, "tick") for t in ticks))
        except EngineUnavailable as e:
            return _unavailable(str(e))
        if not all(o.recorded for o in outcomes):
            return _unavailable(next(o.error or "no decision" for o in outcomes if not o.recorded))
        rejected = [{"index": i, "symbol": t.symbol, "reasons": o.decision.get("reasons", [])}
                    for i, (t, o) in enumerate(zip(ticks, outcomes)) if o.decision["status"] != "ACCEPTED"]
        body_out = {"accepted": len(ticks) - len(rejected), "rejected": rejected}
        if rejected:  # ticks before and after a bad one are recorded; say which were not
            code = rejected[0]["reasons"][0].split(":", 1)[0] if rejected[0]["reasons"] else "REJECTED"
            return JSONResponse({"error": code, **body_out}, 400)
        return JSONResponse(body_out, 202)

    # -- reads and the kill switch --------------------------------------------------------------
    async def positions(self, request: Request) -> Response:
        account = request.query_params.get("account")
        try:
            data = await self.bridge.request("positions", {"account": account} if account else None)
        except EngineUnavailable as e:
            return _unavailable(str(e))
        return JSONResponse({"positions": data})

    def _authorised(self, request: Request) -> bool:
        if not self.admin_token:
            return False  # no token configured: the kill switch is not exposed over HTTP
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.admin_token.encode())

    async def _switch(self, request: Request, kind: str) -> Response:
        if not self._authorised(request):
            return JSONResponse({"error": "UNAUTHORIZED", "detail": "Authorization: Bearer <admin token> required"},
                                401, headers={"WWW-Authenticate": 'Bearer realm="wojak"'})
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        args = {"reason": f"HTTP {kind} by request {request.state.request_id}"}
        if body.strip():
            try:
                given = _any_json.decode(body)
            except msgspec.DecodeError as e:
                return JSONResponse({"error": "SCHEMA", "field": None, "detail": f"not JSON: {e}"}, 400)
            if isinstance(given, dict) and isinstance(given.get("reason"), str):
                args["reason"] = given["reason"][:200]
        try:
            data = await self.bridge.request(kind, args)
        except EngineUnavailable as e:
            return _unavailable(str(e))
        return JSONResponse(data)

    async def halt(self, request: Request) -> Response:
        return await self._switch(request, "halt")

    async def resume(self, request: Request) -> Response:
        return await self._switch(request, "resume")

    async def healthz(self, request: Request) -> Response:
        try:
            data = await self.bridge.request("health", timeout_s=min(2.0, self.bridge.timeout_s))
        except EngineUnavailable as e:
            return JSONResponse({"engine": "unreachable", "endpoint": self.link.endpoint, "detail": str(e)}, 503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        if data.get("standby"):  # another engine holds the store: a load balancer should send orders there
            return JSONResponse({"engine": "standby", "endpoint": self.link.endpoint,
                                 "lease_holder": data.get("lease_holder")}, 503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse({"engine": "up", "endpoint": self.link.endpoint, "halted": data.get("halted"),
                             "in_flight": self.link.in_flight})

    async def metrics(self, request: Request) -> Response:
        metrics.IN_FLIGHT.labels(SOURCE).set(self.link.in_flight)
        metrics.QUEUE_DEPTH.labels(SOURCE).set(self.bridge.waiting)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _is_tick(body: bytes) -> bool:
    try:
        obj = _any_json.decode(body)
    except msgspec.DecodeError:
        return False
    return isinstance(obj, dict) and obj.get("kind") == "tick"
