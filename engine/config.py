"""`wojak.toml`: every key has a sane default; an unknown key or a wrong type is an error naming it.

The defaults run the whole system on one host: SQLite next to the working directory, the sandbox
broker, the built-in NSE sample instrument master, escalations to a log file.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Pct = Annotated[float, msgspec.Meta(gt=0, le=100)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
CouchbaseName = Annotated[str, msgspec.Meta(min_length=1, max_length=251, pattern=r"^[A-Za-z0-9][A-Za-z0-9_%\-]*$")]
AccountName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class EngineSection(_Section):
    endpoint: str = "ipc://wojak-engine.sock"
    # Most requests, and most items (orders, ticks) in them, the loop takes off the socket as one
    # batch (one intent write, one group commit). Smaller batches keep several in the pipeline at
    # once - one being decided while the store writer commits the one before - and that overlap,
    # not batch size, is what sets throughput with a bounded window in flight.
    max_batch: PositiveInt = 512
    max_batch_items: PositiveInt = 48
    # "" = the system clock. An ISO-8601 time starts the engine's clock there, running at real speed:
    # for replays, drills and tests of time rules (market hours, expiry-day cutoff).
    simulated_start: str = ""
    # CURVE keys (z85) for tcp:// endpoints; read from these env vars, never from the file.
    curve_public_env: str = "WOJAK_CURVE_SERVER_PUBLIC"
    curve_secret_env: str = "WOJAK_CURVE_SERVER_SECRET"
    # A directory of authorised client public keys (*.key from `wojak keys generate`);
    # "" = any client that knows the server's public key.
    curve_allowed_clients: str = ""
    # Prometheus metrics over HTTP (engine/metrics.py): 0 = off. The address defaults to loopback.
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    metrics_addr: str = "127.0.0.1"


class StoreSection(_Section):
    kind: Literal["sqlite", "couchbase"] = "sqlite"
    path: str = "wojak-data/wojak.db"
    # "process": a child process commits batches while the engine gates the next one (answers still
    # leave only after their commit); "inline": the engine commits each batch itself.
    writer: Literal["process", "inline"] = "process"
    # couchbase: connection string and credentials come from env vars, never from this file
    connstr_env: str = "WOJAK_COUCHBASE_CONNSTR"
    username_env: str = "WOJAK_COUCHBASE_USERNAME"
    password_env: str = "WOJAK_COUCHBASE_PASSWORD"
    bucket: str = "wojak"
    # The scope this engine writes (one writer per scope; the platform gives each cloud its own,
    # as XDCR replicates the bucket both ways). Couchbase's rules: letters, digits, _ - %.
    scope: CouchbaseName = "wojak"
    # Create the scope, its collections and indexes at start where missing. Needs a user allowed to
    # manage them: off by default (least privilege; `CouchbaseStore.ensure_schema` at deployment).
    create_schema: bool = False
    # Writer lease (Couchbase; engine/store/lease.py): one engine writes a scope at a time, the
    # others stand by and take over when it lapses. The holder renews every third of this and stops
    # itself once it has gone half of it unrenewed - early enough that its last write lands while
    # the lease still holds. A clean stop hands the lease over at once.
    lease_ttl_s: Annotated[int, msgspec.Meta(ge=45, le=600)] = 60


class BrokerSection(_Section):
    kind: Literal["sandbox"] = "sandbox"
    fill_probability: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.95
    seed: int = 7
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 0.0
    # The sandbox keeps its own durable journal, as an exchange would; "" = beside the store.
    journal: str = ""


class RiskSection(_Section):
    max_order_lots: PositiveInt = 50
    max_notional: Positive = 50_000_000.0  # INR of order value (quantity x price)
    price_band_pct: Pct = 10.0  # NSE futures' dynamic band starts at 10%
    max_position_lots: PositiveInt = 200
    max_gross_exposure: Positive = 500_000_000.0  # INR, sum of |net qty| x last price per account
    daily_loss_limit: Positive = 2_500_000.0  # INR, realised today + mark-to-market
    max_orders_per_second: PositiveInt = 10  # per account; SEBI's registration threshold
    enforce_market_hours: bool = False  # the sandbox is used at any hour; production sets true
    market_open: HHMM = "09:15"
    market_close: HHMM = "15:30"
    timezone: str = "Asia/Kolkata"
    expiry_day_cutoff: HHMM = "14:00"
    freeze_qty_policy: Literal["escalate", "slice"] = "escalate"
    # Gross exposure and MTM follow own fills exactly; revaluation at market prices is this fresh.
    mtm_refresh_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 1000
    # Exchange trading holidays (TOML dates, unquoted: [2026-12-25]), from the exchange's circular for the
    # year: the market is closed on them (with enforce_market_hours), and the built-in sample master
    # moves an expiry that falls on one to the trading day before, as NSE does. None are built in:
    # a wrong calendar is worse than none.
    holidays: list[dt.date] = []
    # The accounts this engine trades for. [] = any account; a list makes it an allowlist: an order
    # for another account is REJECTED (UNKNOWN_ACCOUNT) - a mistyped account would otherwise be a new
    # one, with fresh limits of its own - unless it only reduces a position that account holds.
    accounts: list[AccountName] = []


class InstrumentsSection(_Section):
    # "builtin" = the NSE index F&O sample master generated for today (never stale); else a CSV path.
    path: str = "builtin"


class EscalationSection(_Section):
    kind: Literal["log", "http"] = "log"
    url: str = ""
    path: str = "wojak-data/escalations.jsonl"
    timeout_s: Positive = 5.0
    max_attempts: PositiveInt = 50


class HttpSection(_Section):
    listen: str = "127.0.0.1:8080"
    admin_token_env: str = "WOJAK_ADMIN_TOKEN"
    tls_cert: str = ""
    tls_key: str = ""
    max_body_bytes: PositiveInt = 65536
    timeout_s: Positive = 5.0


class Config(_Section):
    engine: EngineSection = msgspec.field(default_factory=EngineSection)
    store: StoreSection = msgspec.field(default_factory=StoreSection)
    broker: BrokerSection = msgspec.field(default_factory=BrokerSection)
    risk: RiskSection = msgspec.field(default_factory=RiskSection)
    instruments: InstrumentsSection = msgspec.field(default_factory=InstrumentsSection)
    escalation: EscalationSection = msgspec.field(default_factory=EscalationSection)
    http: HttpSection = msgspec.field(default_factory=HttpSection)


class ConfigError(ValueError):
    pass


def load(path: str | os.PathLike | None) -> Config:
    """Read and validate a config file; None or a missing default file gives the built-in defaults."""
    if path is None:
        return validate(Config())
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    return loads(data, source=str(p))


def loads(data: bytes | str, source: str = "<config>") -> Config:
    try:
        cfg = msgspec.toml.decode(data, type=Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_explain(str(e))}") from None
    except msgspec.DecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return validate(cfg, source)


def _explain(msg: str) -> str:
    """msgspec says "... - at `$.risk.max_order_lots`": name the key as a person writes it."""
    if " - at `$." not in msg:
        return msg
    text, where = msg.rsplit(" - at `$.", 1)
    section, _, key = where.rstrip("`").partition(".")
    return f"[{section}] {key}: {text}" if key else f"[{section}]: {text}"


def validate(cfg: Config, source: str = "<config>") -> Config:
    """Cross-field checks that a type cannot express."""
    r = cfg.risk
    if minutes(r.market_open) >= minutes(r.market_close):
        raise ConfigError(f"{source}: [risk] market_open must be before market_close")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(r.timezone)
    except Exception:
        raise ConfigError(f"{source}: [risk] timezone: unknown time zone {r.timezone!r}") from None
    if cfg.engine.simulated_start:
        try:
            t = dt.datetime.fromisoformat(cfg.engine.simulated_start)
        except ValueError:
            raise ConfigError(f"{source}: [engine] simulated_start: not an ISO-8601 time") from None
        if t.tzinfo is None:
            raise ConfigError(f"{source}: [engine] simulated_start: needs a UTC offset, e.g. +05:30")
    if not cfg.engine.endpoint.startswith(("ipc://", "tcp://", "inproc://")):
        raise ConfigError(f"{source}: [engine] endpoint: must start with ipc:// or tcp://")
    if cfg.escalation.kind == "http" and not cfg.escalation.url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: [escalation] url: an http(s) URL is required when kind = \"http\"")
    return cfg


def minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)
