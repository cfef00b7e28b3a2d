"""An engine that cannot start says why in one line naming what to fix, and exits 1 - no traceback."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from engine_testkit import REPO
from tests.support.engine_proc import write_config


def _engine(tmp_path: Path, **sections: dict) -> subprocess.CompletedProcess:
    cfg = {"engine": {"endpoint": f"ipc://{tmp_path}/e.sock"}, "store": {"path": str(tmp_path / "w.db")}}
    for name, keys in sections.items():
        cfg.setdefault(name, {}).update(keys)
    config = write_config(tmp_path / "wojak.toml", cfg)
    return subprocess.run([sys.executable, "-m", "wojak.cli", "engine", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_engine_when_its_master_cannot_be_read_then_it_names_the_file(tmp_path):
    missing = tmp_path / "master.csv"
    out = _engine(tmp_path, instruments={"path": str(missing)})
    assert out.returncode == 1
    assert f"Error: {missing}: cannot read instrument master" in out.stderr
    assert "Traceback" not in out.stderr


def test_engine_when_its_endpoint_is_taken_then_it_names_the_endpoint(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        out = _engine(tmp_path, engine={"endpoint": endpoint})
    assert out.returncode == 1
    assert f"cannot bind [engine] endpoint {endpoint}: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr
