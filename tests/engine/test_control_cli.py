"""`wojak halt | resume | status` against a running engine over ZeroMQ: the kill switch from a shell."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine_testkit import NO_LIMITS, REPO, codes, one, order



def wojak(*args: str, config: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "wojak.cli", *args] + (["--config", str(config)] if config else [])
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_halt_and_resume_when_run_from_a_shell_then_the_engine_switches_and_status_shows_it(start_engine):
    eng = start_engine("control-cli", risk=NO_LIMITS)
    with eng.client() as c:
        assert one(c, order("cc-1", account="cc"))["status"] == "FILLED"
        out = wojak("halt", "--reason", "fat-finger drill", config=eng.config)
        assert out.returncode == 0 and out.stdout.strip() == "halted: fat-finger drill", out
        blocked = one(c, order("cc-2", account="cc"))
        assert blocked["status"] == "REJECTED" and codes(blocked) == ["TRADING_HALTED"]
        reducing = one(c, order("cc-3", side="SELL", account="cc"))  # closes cc-1's position: passes
        assert reducing["status"] == "FILLED"

        status = wojak("status", config=eng.config)
        assert "kill switch ON (fat-finger drill)" in status.stdout, status
        health = json.loads(wojak("status", "--json", config=eng.config).stdout)
        assert health["halted"] is True and health["decisions"]["REJECTED"] == 1

        assert wojak("resume", config=eng.config).stdout.strip() == "trading resumed"
        assert one(c, order("cc-4", account="cc"))["status"] == "FILLED"
        assert "kill switch off" in wojak("status", config=eng.config).stdout
    eng.stop()


def test_status_when_no_engine_listens_then_exit_1_and_says_so(tmp_path):
    out = wojak("status", "--timeout", "0.3", env={"WOJAK_ENGINE_ENDPOINT": f"ipc://{tmp_path}/nobody.sock"})
    assert out.returncode == 1
    assert "no answer from ipc://" in out.stderr and "in 300 ms" in out.stderr
    assert "is the engine running there?" in out.stderr
