"""`wojak bench` stays runnable by anyone: a short run of the real path prints what README promises.

Not a performance test (figures on a shared CI machine mean nothing): it holds the benchmark to
measuring what it says - every order answered and recorded, the documented mix of outcomes reached,
and the lines README quotes (throughput, percentiles, CPU, RSS, the machine, the RESULT line).
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys

from engine_testkit import REPO

ORDERS = 4000


def test_bench_when_run_short_then_every_order_is_decided_and_recorded_and_the_figures_printed():
    out = subprocess.run([sys.executable, "-m", "wojak.cli", "bench", "-n", str(ORDERS), "-w", "40"],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout

    decisions = re.search(r"^decisions: (\{.*?\})\s+\(store: ([\d,]+) orders, ([\d,]+) ticks, (\d+) pending\)$",
                          text, re.M)
    assert decisions, text
    statuses = ast.literal_eval(decisions.group(1))
    assert sum(statuses.values()) == ORDERS
    # The mix README describes: fills, broker failures, escalations (price band), rejections.
    assert set(statuses) == {"FILLED", "FAILED", "ESCALATED", "REJECTED"}, statuses
    assert statuses["FILLED"] > ORDERS * 0.8
    stored, ticks, pending = (int(g.replace(",", "")) for g in decisions.groups()[1:])
    assert stored == ORDERS and pending == 0
    assert ticks >= ORDERS // 20  # a tick after every 20 orders

    latency = re.search(r"^answer latency: p50 ([\d.]+) ms  p99 ([\d.]+) ms  p99\.9 ([\d.]+) ms  max ([\d.]+) ms$",
                        text, re.M)
    assert latency, text
    p50, p99, p999, top = map(float, latency.groups())
    assert 0 < p50 <= p99 <= p999 <= top
    assert re.search(r"^peak RSS: engine \d+ MiB, store writer \d+ MiB, outbox \d+ MiB, load generator \d+ MiB$",
                     text, re.M), text
    assert re.search(r"^CPU per order: engine [\d.]+ us, writer [\d.]+ us", text, re.M), text
    assert re.search(r"^machine \(\d+ cores\): user \d+%, nice \d+%, system \d+%, idle \d+%", text, re.M), text
    result = re.search(r"^RESULT: ([\d,]+) orders/min, p99 ([\d.]+) ms$", text.strip().splitlines()[-1])
    assert result, text
    assert int(result.group(1).replace(",", "")) > 0 and float(result.group(2)) == p99
