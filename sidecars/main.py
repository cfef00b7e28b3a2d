"""Entry point shared by the pull-style sidecars: build the link and the source, run, drain."""
from __future__ import annotations

import logging
import signal
import threading
from typing import Callable, TypeVar

from prometheus_client import start_http_server

from engine.config import Config
from sidecars.link import EngineLink
from sidecars.runtime import Runner, Source, wait_for_engine
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
    # The source is made once the engine decides: a consumer that joined its group (Kafka) and then
    # did not poll would hold its partitions unread until the broker evicted it.
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    if not wait_for_engine(link, stopping, "sidecar"):
        link.close()
        return 0
    source = make_source()
    runner = Runner(source, link, receive_max=receive_max)
    runner.engine_deciding = True
    runner.install_signal_handlers()
    if stopping.is_set():  # a signal between the wait and the runner's own handlers
        runner.stop()
    log.info("%s sidecar forwarding to %s (window %d)", source.name, link.endpoint, link.window)
    try:
        return runner.run()
    finally:
        link.close()
