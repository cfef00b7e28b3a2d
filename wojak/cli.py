"""`wojak`: the one command for every process and tool. Subcommands import what they need lazily,
so `wojak engine` never loads a cloud SDK."""
from __future__ import annotations

import datetime as dt
import importlib
import logging
import sys

import click

SOURCES = ("http", "sqs", "sns", "stepfunctions", "kinesis", "pubsub", "kafka", "rabbitmq")


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _config(path: str | None):
    from engine.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def _here_config(path: str | None):
    """For the commands a person runs where the system runs: --config, else ./wojak.toml when it
    exists, else the built-in defaults."""
    from pathlib import Path

    if path is None and Path("wojak.toml").is_file():
        path = "wojak.toml"
    return _config(path)


# --config for those commands
_HERE_CONFIG = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                            help="wojak.toml (./wojak.toml, else the defaults, if omitted)")


@click.group()
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def cli(log_level: str) -> None:
    """Wojak: pre-trade risk gate and order routing for NSE F&O."""
    _logging(log_level)


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="wojak.toml (defaults if omitted)")
def engine(config_path: str | None) -> None:
    """Run the engine: a ZeroMQ ROUTER at [engine] endpoint."""
    from engine.instruments import InstrumentError
    from engine.server import run

    cfg = _config(config_path)
    try:
        code = run(cfg)
    except InstrumentError as e:  # a missing or malformed master: say which, no traceback
        raise click.ClickException(str(e)) from None
    sys.exit(code)


@cli.command()
@click.argument("source", type=click.Choice(SOURCES))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="wojak.toml (defaults if omitted)")
def sidecar(source: str, config_path: str | None) -> None:
    """Run the sidecar for SOURCE; its settings come from WOJAK_<SOURCE>_* env vars."""
    module = importlib.import_module(f"sidecars.{source}")
    sys.exit(module.main(_config(config_path)))


@cli.command()
@_HERE_CONFIG
@click.option("--demo", is_flag=True, help="Feed a short realistic stream and print a summary of decisions.")
def local(config_path: str | None, demo: bool) -> None:
    """Engine + HTTP sidecar on this host over ipc://, SQLite store, sandbox broker.

    Uses ./wojak.toml when it exists and no --config is given; built-in defaults otherwise."""
    from wojak.local import run

    sys.exit(run(_here_config(config_path), demo=demo))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--orders", "-n", default=200_000, show_default=True, help="Orders to send.")
@click.option("--window", "-w", default=100, show_default=True, help="Orders in flight.")
@click.option("--batch", default=10, show_default=True, help="Orders per request frame.")
@click.option("--tick-every", default=20, show_default=True, help="A tick after every N orders.")
@click.option("--keep", is_flag=True, help="Keep the benchmark's data directory.")
@click.option("--source", type=click.Choice([s for s in SOURCES if s != "http"]), default=None,
              help="Instead: a source sidecar end to end through its real server (started here).")
def bench(orders: int, window: int, batch: int, tick_every: int, keep: bool, source: str | None) -> None:
    """Benchmark the real path: DEALER -> ZeroMQ -> engine -> risk -> sandbox -> durable commit -> answer."""
    if source:
        # The source benchmarks start their servers with the test suite's launchers (tests/support),
        # so they run from a checkout of the repository: put its root on the path.
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        module = importlib.import_module(f"bench.sidecar_{source}")
        click.echo(module.main(orders if orders != 200_000 else 5000).line())
        return
    from bench.engine_bench import main

    sys.exit(main(orders=orders, window=window, batch=batch, tick_every=tick_every, keep=keep))


def _ask_engine(config_path: str | None, kind: str, args: dict | None = None, timeout_s: float = 5.0) -> dict:
    """One request to the running engine (WOJAK_ENGINE_ENDPOINT, else [engine] endpoint): its data."""
    from engine.client import EngineClient, EngineUnavailable
    from sidecars.settings import engine_endpoint

    endpoint = engine_endpoint(_here_config(config_path))
    try:
        with EngineClient(endpoint, timeout_s=timeout_s) as client:
            resp = client.call(kind, args=args)
    except EngineUnavailable as e:
        raise click.ClickException(f"{e}: is the engine running there?") from None
    if not resp.ok:
        raise click.ClickException(f"the engine refused {kind}: {resp.error}")
    return resp.data


@cli.command()
@click.option("--reason", default="manual (wojak halt)", show_default=True, help="Recorded with the kill switch.")
@_HERE_CONFIG
def halt(reason: str, config_path: str | None) -> None:
    """Kill switch ON: orders that add risk are REJECTED (TRADING_HALTED); risk-reducing ones pass."""
    state = _ask_engine(config_path, "halt", {"reason": reason})
    click.echo(f"halted: {state['reason']}")


@cli.command()
@_HERE_CONFIG
def resume(config_path: str | None) -> None:
    """Kill switch OFF."""
    _ask_engine(config_path, "resume")
    click.echo("trading resumed")


@cli.command()
@_HERE_CONFIG
@click.option("--json", "as_json", is_flag=True, help="The engine's health answer as JSON.")
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Seconds to wait for the answer (exit 1 without one).")
def status(config_path: str | None, as_json: bool, timeout_s: float) -> None:
    """Ask the running engine: kill switch, instruments loaded, decisions so far."""
    import json

    health = _ask_engine(config_path, "health", timeout_s=timeout_s)
    if as_json:
        click.echo(json.dumps(health, sort_keys=True))
        return
    if health.get("standby"):  # a shared store's engine without its writer lease (engine/server.py)
        click.echo(f"engine standing by: the store's writer is {health.get('lease_holder')}; this one takes over "
                   f"when that lease ends")
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(health.get("decisions", {}).items())) or "none yet"
    switch = f"ON ({health.get('halt_reason') or 'no reason given'})" if health["halted"] else "off"
    click.echo(f"engine up; kill switch {switch}; "
               f"{health['instruments']} instruments; decisions: {counts}")


@cli.group()
def book() -> None:
    """The order book, trade book, positions, ticks and escalations in the store (read-only)."""


def _show(config_path: str | None, as_json: bool, rows) -> None:
    """Open the configured store, print what `rows(store, tz)` reads from it, close it."""
    import zoneinfo
    from pathlib import Path

    from engine.store import open_store
    from wojak.book import render

    cfg = _here_config(config_path)
    if cfg.store.kind == "sqlite" and not Path(cfg.store.path).is_file():
        raise click.ClickException(f"no store at {cfg.store.path} (run from where the engine runs, or pass --config)")
    store = open_store(cfg.store)
    try:
        for line in render(rows(store, zoneinfo.ZoneInfo(cfg.risk.timezone)), as_json):
            click.echo(line)
    finally:
        store.close()


_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")


@book.command("orders")
@_HERE_CONFIG
@_JSON
@click.option("--account", default=None, help="Only this account's orders.")
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(min=1), help="The latest N.")
def book_orders(config_path: str | None, as_json: bool, account: str | None, limit: int) -> None:
    """Decided orders, the latest N, oldest first: status, fill, reason codes."""
    from wojak.book import orders

    _show(config_path, as_json, lambda store, tz: orders(store, tz, account, limit))


@book.command("trades")
@_HERE_CONFIG
@_JSON
@click.option("--order", "client_order_id", default=None, help="Only this order's trades (a sliced order's "
              "slices included).")
def book_trades(config_path: str | None, as_json: bool, client_order_id: str | None) -> None:
    """Trades, oldest first."""
    from wojak.book import trades

    _show(config_path, as_json, lambda store, tz: trades(store, tz, client_order_id))


@book.command("positions")
@_HERE_CONFIG
@_JSON
@click.option("--account", default=None, help="Only this account's positions.")
@click.option("--open", "open_only", is_flag=True, help="Leave out flat positions.")
def book_positions(config_path: str | None, as_json: bool, account: str | None, open_only: bool) -> None:
    """Positions: net quantity, average price, realised and unrealised P&L (at the last tick stored)."""
    from wojak.book import positions

    _show(config_path, as_json, lambda store, tz: positions(store, account, open_only))


@book.command("ticks")
@click.argument("symbol")
@_HERE_CONFIG
@_JSON
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(min=1), help="The latest N.")
def book_ticks(symbol: str, config_path: str | None, as_json: bool, limit: int) -> None:
    """A symbol's latest ticks, newest first."""
    from wojak.book import ticks

    _show(config_path, as_json, lambda store, tz: ticks(store, tz, symbol, limit))


@book.command("escalations")
@_HERE_CONFIG
@_JSON
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(min=1), help="The latest N.")
@click.option("--undelivered", is_flag=True, help="Only those the risk-management system has not taken yet.")
def book_escalations(config_path: str | None, as_json: bool, limit: int, undelivered: bool) -> None:
    """Escalated orders and their delivery to the risk-management system (when, or attempts and last error)."""
    from wojak.book import escalations

    _show(config_path, as_json, lambda store, tz: escalations(store, tz, limit, undelivered))


@cli.group()
def keys() -> None:
    """CURVE keys for tcp:// links."""


@keys.command("generate")
@click.option("--dir", "directory", default="keys", show_default=True)
@click.option("--name", default="engine", show_default=True)
def keys_generate(directory: str, name: str) -> None:
    """Write NAME.key (public) and NAME.key_secret into DIR."""
    from engine.curve import generate

    pub, sec = generate(directory, name)
    click.echo(f"public: {pub}\nsecret: {sec}  (keep it secret; pass its path or z85 key by env var)")


@cli.group()
def instruments() -> None:
    """The instrument master."""


@instruments.command("sample")
@click.option("--date", "on", default=None, help="ISO date the master is generated for (default: today, IST).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="wojak.toml whose [risk] holidays move expiries (none if omitted)")
def instruments_sample(on: str | None, config_path: str | None) -> None:
    """Print the built-in NSE index F&O sample master as CSV."""
    from engine.clock import Clock
    from engine.instruments import sample_csv

    day = dt.date.fromisoformat(on) if on else Clock().local().date()
    holidays = _config(config_path).risk.holidays if config_path else ()
    click.echo(sample_csv(day, holidays=holidays), nl=False)


@cli.command()
@click.argument("stack")
def plan(stack: str) -> None:
    """Offline: what `pulumi up -s STACK` would create, by cloud, role and lifecycle, and its monthly cost."""
    from infra.plan import main

    sys.exit(main(stack))


def main() -> None:
    cli(prog_name="wojak")


if __name__ == "__main__":
    main()
