"""Sidecar settings from the environment, as a container orchestrator passes them.

`WOJAK_ENGINE_ENDPOINT`, `WOJAK_WINDOW`, `WOJAK_METRICS_PORT` are common; each source reads its own
`WOJAK_<SOURCE>_<NAME>`. A missing required setting or a bad value is an error naming the variable.
"""
from __future__ import annotations

import os
from typing import Callable, TypeVar

from engine.config import Config

T = TypeVar("T")


class SettingsError(ValueError):
    pass


def env(name: str, default: T | None = None, cast: Callable[[str], T] = str, required: bool = False) -> T:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if required:
            raise SettingsError(f"${name} is required")
        return default  # type: ignore[return-value]
    try:
        return cast(raw)
    except ValueError as e:
        raise SettingsError(f"${name}={raw!r}: {e}") from None


def flag(raw: str) -> bool:
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def engine_endpoint(cfg: Config) -> str:
    return env("WOJAK_ENGINE_ENDPOINT", cfg.engine.endpoint)


def window() -> int:
    return env("WOJAK_WINDOW", 100, int)
