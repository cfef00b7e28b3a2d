"""`wojak local`: the whole system on one host, for a person at a terminal.

Two supervised child processes talk over ipc://: `wojak engine` (SQLite store, sandbox broker, the
instrument master of the config, by default the built-in NSE sample) and `wojak sidecar http`.
Their logs go to files beside the store; this process prints where it listens and how to place an
order. Ctrl-C or SIGTERM stops the sidecar first (it drains its requests), then the engine, and
exits 0. If either child dies on its own, both are stopped and the exit code is 1.

The children run in their own process group: Ctrl-C in the terminal reaches only this supervisor,
so the stop order (sidecar, then engine) holds.
"""
from __future__ import annotations

import http.client
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec

from engine.client import EngineClient, EngineUnavailable
from engine.config import Config
from sidecars.http import parse_listen
from wojak.procs import write_config

START_TIMEOUT_S = 30.0


class Child:
    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, process_group=0)

    def exited(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout: float) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"wojak local: {self.name} did not stop in {timeout:.0f}s; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def local_config(cfg: Config) -> tuple[Config, Path]:
    """The config both children run with: the caller's, over ipc:// beside the store."""
    data_dir = Path(cfg.store.path).parent
    data_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.engine.endpoint.startswith("ipc://"):
        # ipc paths are limited to ~100 bytes: keep it relative to the working directory.
        cfg = msgspec.structs.replace(cfg, engine=msgspec.structs.replace(
            cfg.engine, endpoint=f"ipc://{data_dir / 'engine.sock'}"))
    path = write_config(data_dir / "local.toml", msgspec.to_builtins(cfg))
    return cfg, path


def _engine_ready(endpoint: str) -> bool:
    try:
        with EngineClient(endpoint, timeout_s=0.5) as c:
            return c.call("health").ok
    except EngineUnavailable:
        return False


def _http_ready(host: str, port: int, tls: bool) -> bool:
    if tls:  # only asks whether our own child is up; the client's trust is the client's business
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=1, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _wait(what: str, ready, children: list[Child], stop: threading.Event) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        for c in children:
            if c.exited() is not None:
                print(f"wojak local: {c.name} exited with code {c.exited()} while starting; its log "
                      f"({c.log}):\n{c.tail()}", file=sys.stderr)
                return False
        if ready():
            return True
        time.sleep(0.1)
    if not stop.is_set():
        print(f"wojak local: {what} not ready in {START_TIMEOUT_S:.0f}s", file=sys.stderr)
    return False


def run(cfg: Config, demo: bool = False) -> int:
    cfg, cfg_path = local_config(cfg)
    data_dir = cfg_path.parent
    host, port = parse_listen(cfg.http.listen)
    tls = bool(cfg.http.tls_cert)
    base = f"{'https' if tls else 'http'}://{host if ':' not in host else f'[{host}]'}:{port}"
    env = dict(os.environ)
    token = env.get(cfg.http.admin_token_env, "").strip()
    generated = not token
    if generated:  # a fresh kill-switch token for this session, shown to the person who started it
        token = secrets.token_urlsafe(18)
        env[cfg.http.admin_token_env] = token

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    cmd = [sys.executable, "-m", "wojak.cli"]
    children: list[Child] = []
    try:
        engine = Child("engine", cmd + ["engine", "--config", str(cfg_path)], data_dir / "engine.log", env)
        children.append(engine)
        if not _wait("engine", lambda: _engine_ready(cfg.engine.endpoint), children, stop):
            return 0 if stop.is_set() else 1
        sidecar = Child("http sidecar", cmd + ["sidecar", "http", "--config", str(cfg_path)],
                        data_dir / "sidecar.log", env)
        children.append(sidecar)
        if not _wait("http sidecar", lambda: _http_ready(host, port, tls), children, stop):
            return 0 if stop.is_set() else 1
        _announce(cfg, base, token, generated, data_dir)
        if demo:
            from wojak.demo import run as run_demo

            run_demo(base, token, tls=tls, holidays=cfg.risk.holidays)
            print("\nThe demo is done; Wojak keeps running. Ctrl-C to stop.", flush=True)
        while not stop.wait(0.2):
            for c in children:
                if c.exited() is not None:
                    print(f"wojak local: {c.name} exited with code {c.exited()}; stopping. Its log ({c.log}):\n"
                          f"{c.tail()}", file=sys.stderr, flush=True)
                    return 1
        print("\nwojak local: stopping (the sidecar drains, then the engine)...", flush=True)
        return 0
    finally:
        codes = [c.stop(cfg.http.timeout_s + 15) for c in reversed(children)]
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stop.is_set() and all(code == 0 for code in codes):
            print("wojak local: stopped cleanly.", flush=True)


def example_symbol(cfg: Config) -> str:
    """The front-month NIFTY future when the built-in master is in use, for the printed example."""
    if cfg.instruments.path != "builtin":
        return "<a symbol of your instrument master>"
    from engine.clock import Clock
    from wojak.procs import nifty_fut

    return nifty_fut(Clock(cfg.risk.timezone, cfg.engine.simulated_start).local().date())


def _announce(cfg: Config, base: str, token: str, generated: bool, data_dir: Path) -> None:
    where = "generated for this session" if generated else f"from ${cfg.http.admin_token_env}"
    tls = " --cacert <your CA file>" if base.startswith("https") else ""
    print(f"""Wojak is running on this host.
  HTTP API   {base}   (POST /v1/orders, POST /v1/ticks, GET /v1/orders/<id>, GET /v1/positions,
                          GET /healthz, GET /metrics)
  engine     {cfg.engine.endpoint}   store {cfg.store.path} (SQLite), broker: sandbox
  admin      Authorization: Bearer {token}   ({where}; for POST /v1/halt and /v1/resume)
  logs       {data_dir / 'engine.log'}, {data_dir / 'sidecar.log'}
Try:
  curl -s{tls} {base}/v1/orders -H 'content-type: application/json' \\
    -d '{{"client_order_id": "my-order-1", "symbol": "{example_symbol(cfg)}", "side": "BUY", "quantity": 65, "price": 26000}}'
Ctrl-C to stop.""", flush=True)
