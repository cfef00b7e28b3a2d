"""What the four AWS sidecars (sqs, sns, stepfunctions, kinesis) share: building boto3 clients from
the environment, naming AWS errors, and the entry point that refuses to start on a bad setting.

    WOJAK_AWS_ENDPOINT_URL      endpoint override (a local moto server, a VPC endpoint); unset = AWS
    WOJAK_AWS_REGION            region; falls back to AWS_REGION, AWS_DEFAULT_REGION, then ap-south-1
    WOJAK_AWS_MAX_ATTEMPTS      botocore retry attempts per call, "standard" mode (default 5)
    WOJAK_AWS_CONNECT_TIMEOUT_S / WOJAK_AWS_READ_TIMEOUT_S   socket timeouts (default 3 / 30)

Credentials come from botocore's default chain (env vars, web identity / IRSA, instance profile):
never from a Wojak setting.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from engine.config import Config
from sidecars.settings import SettingsError, env

log = logging.getLogger("wojak.sidecar")

DEFAULT_REGION = "ap-south-1"  # Mumbai: next to NSE


def region() -> str:
    return env("WOJAK_AWS_REGION") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
        or DEFAULT_REGION


def client(service: str, read_timeout_s: float | None = None) -> Any:
    """A boto3 client for `service` configured from WOJAK_AWS_* (one per source; boto3 clients are
    thread-safe, sessions are not, so each gets its own session)."""
    import boto3
    from botocore.config import Config as BotoConfig

    cfg = BotoConfig(
        region_name=region(),
        retries={"mode": "standard", "max_attempts": env("WOJAK_AWS_MAX_ATTEMPTS", 5, int)},
        connect_timeout=env("WOJAK_AWS_CONNECT_TIMEOUT_S", 3.0, float),
        # a long poll holds the connection up to 20 s: the read timeout must exceed it
        read_timeout=read_timeout_s or env("WOJAK_AWS_READ_TIMEOUT_S", 30.0, float),
        max_pool_connections=20,
    )
    return boto3.session.Session().client(service, endpoint_url=env("WOJAK_AWS_ENDPOINT_URL") or None, config=cfg)


def error_code(e: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else: network, timeouts)."""
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def run(cfg: Config, name: str, make_source: Callable[[], Any], receive_max: int = 10) -> int:
    """`wojak sidecar <name>`: build the source first (settings, and one call that proves the queue or
    stream is there and readable), then run it. A bad setting or an unreachable resource exits 2 with
    one clear line, not a traceback; once running, AWS errors are logged and retried."""
    from sidecars.main import run_source

    try:
        source = make_source()
    except SettingsError as e:
        log.error("%s sidecar not started: %s", name, e)
        return 2
    except Exception as e:
        log.error("%s sidecar not started: %s%s", name, f"{error_code(e)}: " if error_code(e) else "", e)
        return 2
    return run_source(cfg, lambda: source, receive_max=receive_max)
