"""From the HTTP sidecar's event loop into the EngineLink, and from the engine's answers to HTTP.

The link is push-style and thread-based: `submit` takes a callback that runs on the link's I/O
thread. `Bridge.submit` turns that into an awaitable with a deadline, and never blocks the event
loop: requests wait for a window slot on an asyncio semaphore (that wait is the queue depth the
metrics report), and the callback hands the outcome back with `call_soon_threadsafe`.

`schema_error` reads the field out of msgspec's message ("Expected `int`, got `str` - at
`$.quantity`"), so a client is told which field to fix.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any

from sidecars.link import EngineLink, LinkClosed, Outcome


class EngineUnavailable(Exception):
    """No recorded decision within the deadline: the client should retry (the engine is idempotent)."""


class Bridge:
    def __init__(self, link: EngineLink, timeout_s: float) -> None:
        self.link = link
        self.timeout_s = timeout_s
        self.slots = asyncio.Semaphore(link.window)
        self.waiting = 0

    async def submit(self, payload: Any, kind: str = "submit_order", msg_id: str | None = None) -> Outcome:
        """The engine's outcome for one item; raises EngineUnavailable after `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        if not self.link.connected:  # answer 503 at once rather than after the whole timeout
            up = await asyncio.to_thread(self.link.wait_connected, min(1.0, self.timeout_s))
            if not up:
                raise EngineUnavailable(f"engine at {self.link.endpoint} is not connected")
        answer: asyncio.Future[Outcome] = loop.create_future()

        def answered(outcome: Outcome) -> None:  # on the link's I/O thread
            try:
                loop.call_soon_threadsafe(_resolve, answer, outcome)
            except RuntimeError:
                pass  # the loop is gone (sidecar stopped): nobody is waiting for this answer

        self.waiting += 1
        try:
            await asyncio.wait_for(self.slots.acquire(), self.timeout_s)
        except TimeoutError:
            raise EngineUnavailable(f"no window slot in {self.timeout_s:g}s") from None
        finally:
            self.waiting -= 1
        try:
            # The semaphore matches the link's window, so this rarely waits; when it does (the link
            # frees a slot just after the callback ran) it is for microseconds, off the event loop.
            while not self.link.submit(payload, answered, msg_id=msg_id, kind=kind, timeout=0):
                if loop.time() >= deadline:
                    raise EngineUnavailable("engine link window full")
                await asyncio.sleep(0.001)
            done, _ = await asyncio.wait({answer}, timeout=max(0.0, deadline - loop.time()))
            if not done:
                raise EngineUnavailable(f"no answer from the engine in {self.timeout_s:g}s")
            return answer.result()
        except LinkClosed:
            raise EngineUnavailable("sidecar is stopping") from None
        finally:
            self.slots.release()

    async def request(self, kind: str, args: dict | None = None, timeout_s: float | None = None) -> Any:
        """A read or control request; returns the answer's `data`, raises EngineUnavailable."""
        t = self.timeout_s if timeout_s is None else timeout_s
        try:
            resp = await asyncio.to_thread(self.link.request, kind, args, t)
        except TimeoutError as e:
            raise EngineUnavailable(str(e)) from None
        if not resp.ok:
            raise EngineUnavailable(resp.error or "engine error")
        return resp.data


def _resolve(fut: asyncio.Future, outcome: Outcome) -> None:
    if not fut.done():
        fut.set_result(outcome)


_AT = re.compile(r" - at `\$\.?([^`]*)`\s*$")
_NAMED = re.compile(r"field `([^`]+)`")


def schema_error(reason: str) -> dict:
    """`SCHEMA: Expected `int`, got `str` - at `$.quantity`` -> {"error", "field", "detail"}."""
    code, _, detail = reason.partition(":")
    detail = detail.strip() or reason
    field: str | None = None
    m = _AT.search(detail)
    if m and m.group(1):
        field = m.group(1)
    else:
        m = _NAMED.search(detail)
        if m:
            field = m.group(1)
    return {"error": code.strip() or "SCHEMA", "field": field, "detail": detail}
