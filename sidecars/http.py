"""`wojak sidecar http`: the HTTP(S) source. Orders and ticks arrive as requests; each request is
answered with the engine's recorded decision (routes and status codes: sidecars/http_app.py).

Configuration: the `[http]` section of wojak.toml (listen, admin_token_env, tls_cert, tls_key,
max_body_bytes, timeout_s) and the environment:

    WOJAK_ENGINE_ENDPOINT   the engine (default: [engine] endpoint)
    WOJAK_WINDOW            items in flight to the engine (default 100)
    WOJAK_HTTP_LISTEN       host:port to listen on (default: [http] listen)
    $<admin_token_env>      the bearer token for /v1/halt and /v1/resume (default WOJAK_ADMIN_TOKEN);
                            unset = the kill switch is not exposed over HTTP (every call is 401)

A request is answered only after the engine's answer, or with 503 + Retry-After after
`[http] timeout_s`. SIGTERM/SIGINT drain: stop accepting connections, finish the requests in hand
(each still gets the engine's answer or a 503), close the engine link, exit 0.
"""
from __future__ import annotations

import logging
import os
import signal

import uvicorn

from engine.config import Config
from sidecars.http_app import HttpSidecar
from sidecars.http_logs import RequestIds, use_json_logs
from sidecars.link import EngineLink
from sidecars.settings import SettingsError, engine_endpoint, env, window

log = logging.getLogger("wojak.sidecar.http")


def parse_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:8080" or "[::1]:8080" -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise SettingsError(f"listen address {listen!r}: expected host:port")
    return host.strip("[]"), int(port)


def main(cfg: Config) -> int:
    use_json_logs()
    hc = cfg.http
    host, port = parse_listen(env("WOJAK_HTTP_LISTEN", hc.listen))
    if bool(hc.tls_cert) != bool(hc.tls_key):
        raise SettingsError("[http] tls_cert and tls_key go together: set both or neither")
    token = os.environ.get(hc.admin_token_env, "").strip() or None
    if token is None:
        log.warning("$%s is not set: /v1/halt and /v1/resume answer 401", hc.admin_token_env)
    # give_up_s = the request's own deadline: an item nobody waits for must not hold a window slot.
    link = EngineLink(engine_endpoint(cfg), window=window(), resend_after_s=min(2.0, hc.timeout_s / 2),
                      give_up_s=hc.timeout_s)
    try:
        app = RequestIds(HttpSidecar(link, hc.timeout_s, hc.max_body_bytes, token).app())
        server = uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, ssl_certfile=hc.tls_cert or None, ssl_keyfile=hc.tls_key or None,
            lifespan="off", access_log=False, log_config=None, backlog=2048,
            timeout_graceful_shutdown=int(hc.timeout_s) + 5))
        # uvicorn restores the handlers it found and re-raises the signal it caught after a clean
        # shutdown: make those handlers no-ops so a drained sidecar exits 0, not by the signal.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        scheme = "https" if hc.tls_cert else "http"
        log.info("http sidecar on %s://%s:%d -> engine %s (window %d, timeout %gs)", scheme, host, port,
                 link.endpoint, link.window, hc.timeout_s)
        server.run()
        if not server.started:
            return 1
        link.wait_idle(hc.timeout_s)  # answers for requests that timed out: let them land
        log.info("http sidecar stopped")
        return 0
    finally:
        link.close()
