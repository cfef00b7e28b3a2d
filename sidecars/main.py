"""Entry point shared by the pull-style sidecars: build the link and the source, run, drain."""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from prometheus_client import start_http_server

from engine.config import Config
from sidecars.link import EngineLink
from sidecars.runtime import Runner, Source
from sidecars.settings import SettingsError, engine_endpoint, env, window

log = logging.getLogger("wojak.sidecar")
S = TypeVar("S")


def start(cfg: Config, name: str, settings_from_env: Callable[[], S], make_source: Callable[[S], Source],
          receive_max: Callable[[S], int]) -> int:
    """`wojak sidecar <name>`: read the settings (a missing or bad one exits 2 with one line naming the
    variable, not a traceback), then run the source."""
    try:
        settings = settings_from_env()
    except SettingsError as e:
        log.error("%s sidecar not started: %s", name, e)
        return 2
    return run_source(cfg, lambda: make_source(settings), receive_max=receive_max(settings))


def run_source(cfg: Config, make_source: Callable[[], Source], receive_max: int = 10) -> int:
    """Run a Source until SIGTERM/SIGINT; exits 0 after a clean drain."""
    port = env("WOJAK_METRICS_PORT", 0, int)
    if port:
        start_http_server(port, addr=env("WOJAK_METRICS_ADDR", "127.0.0.1"))
    link = EngineLink(engine_endpoint(cfg), window=window())
    source = make_source()
    runner = Runner(source, link, receive_max=receive_max)
    runner.install_signal_handlers()
    log.info("%s sidecar forwarding to %s (window %d)", source.name, link.endpoint, link.window)
    try:
        return runner.run()
    finally:
        link.close()
