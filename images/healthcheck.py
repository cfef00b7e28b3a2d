"""Container health: the engine this container runs (or, for a sidecar, feeds) answers `health`.

Finds the `wojak` process in the container, reads the config it was started with, and asks the
engine at WOJAK_ENGINE_ENDPOINT (as a sidecar does), else at that config's endpoint, over ZeroMQ
(with CURVE keys from the same env vars as wojak). Kubernetes runs it as the engine container's
startup and liveness probe (infra/k8s.py).
Exit 0 healthy, 1 not.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def wojak_process() -> tuple[list[str], Path] | None:
    for proc in sorted(Path("/proc").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 1 << 30):
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        for i, arg in enumerate(argv):
            if Path(arg).name == "wojak" and len(argv) > i + 1 and argv[i + 1] in ("engine", "sidecar"):
                return argv[i + 1:], cwd
    return None


def main() -> int:
    found = wojak_process()
    if found is None:
        print("no wojak engine or sidecar process", file=sys.stderr)
        return 1
    args, cwd = found
    config = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    os.chdir(cwd)  # an ipc:// endpoint or config path may be relative to the process's directory
    from engine.client import EngineClient, EngineUnavailable
    from engine.config import ConfigError, load

    try:
        cfg = load(config)
        # the endpoint the process itself uses: a sidecar's comes from its environment, as here
        endpoint = os.environ.get("WOJAK_ENGINE_ENDPOINT") or cfg.engine.endpoint
        with EngineClient(endpoint, timeout_s=3.0) as client:
            ok = client.call("health").ok
    except (ConfigError, EngineUnavailable, OSError) as e:
        print(f"unhealthy: {e}", file=sys.stderr)
        return 1
    print("healthy" if ok else "engine answered not ok")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
