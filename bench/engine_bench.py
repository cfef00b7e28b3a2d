"""`wojak bench`: the engine's real path under load, measured end to end.

    load generator (this process, one DEALER)
      -> ZeroMQ ipc:// -> engine process (risk gate -> sandbox broker -> durable batch commit)
      -> answer -> load generator

The generator keeps `window` orders in flight, `batch` orders per request frame, and a tick after
every `tick_every` orders. The mix is realistic on purpose: ~2% of limit prices outside the price
band (ESCALATED), ~1% off the tick size and ~0.5% unknown symbols (REJECTED), ~5% broker failures
(fill probability 0.95), across 1,000 accounts and the sample master's NIFTY and BANKNIFTY
contracts, sides alternating so positions stay inside their limits. Every answer's latency is the
time from sending its frame to receiving the engine's answer (after the engine's commit).
"""
from __future__ import annotations

import collections
import gc
import os
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

import msgspec
import zmq

from engine import protocol
from engine.clock import Clock
from engine.instruments import load_csv, sample_csv
from wojak.procs import EngineProcess

ACCOUNTS = 1000


def _instruments() -> list[tuple[str, float]]:
    """Liquid contracts of the generated master with a reference price each."""
    master = load_csv(sample_csv(Clock().local().date()))
    out = []
    for sym, inst in master.items():
        if inst.underlying not in ("NIFTY", "BANKNIFTY"):
            continue
        out.append((sym, 26000.0 if inst.underlying == "NIFTY" else 59000.0) if inst.instrument_type == "FUT"
                   else (sym, 150.0))
    return out


def _frames(n: int, batch: int, tick_every: int, seed: int = 1) -> list[tuple[bytes, int]]:
    """Pre-encoded request frames (so the generator's cost is not measured) and their order counts."""
    rng = random.Random(seed)
    contracts = _instruments()
    lots = {"NIFTY": 65, "BANKNIFTY": 30}
    frames: list[tuple[bytes, int]] = []
    pending: list[dict] = []
    rid = 0
    run = f"{int(time.time())}"
    for i in range(n):
        sym, px = contracts[i % len(contracts)]
        lot = lots["BANKNIFTY" if sym.startswith("BANKNIFTY") else "NIFTY"]
        r = rng.random()
        price = px
        if r < 0.02:
            price = round(px * 1.25, 2)  # outside the 10% band: ESCALATED
        elif r < 0.03:
            price = px + 0.01  # not a multiple of 0.05: REJECTED
        account = f"acct{i % ACCOUNTS}"
        side = "BUY" if (i // len(contracts)) % 2 == 0 else "SELL"
        # Ids ascend per strategy, as an algo's do (four strategies interleaved).
        order = {"client_order_id": f"s{i % 4}-{run}-{i:010d}", "symbol": "NOPE26DECFUT" if 0.03 <= r < 0.035 else sym,
                 "side": side, "quantity": lot * (1 + i % 3), "order_type": "LIMIT", "price": price,
                 "account": account, "strategy": f"s{i % 4}"}
        pending.append(order)
        if len(pending) == batch or i == n - 1:
            rid += 1
            frames.append((protocol.request("submit_order", rid, pending), len(pending)))
            pending = []
        if tick_every and i % tick_every == tick_every - 1:
            rid += 1
            frames.append((protocol.request("tick", rid, [{"symbol": sym, "ltp": px}]), 0))
    return frames


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_pids(pid: int, module: bytes) -> list[int]:
    """A process's children running `python -m <module>` (the engine's store writer, its outbox);
    a child (or a thread) that exits meanwhile is left out."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended (one serving a metrics scrape, say)
            continue
        for c in children:
            try:
                if module in Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0"):
                    out.append(int(c))
            except FileNotFoundError:
                pass
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _machine_ticks() -> list[int] | None:
    """The whole machine's CPU time by kind since boot (/proc/stat), or None where there is none."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:1 + len(_STAT_FIELDS)]]
    except (OSError, ValueError):
        return None


def _machine_share(before: list[int] | None, after: list[int] | None) -> str:
    """How the machine's cores spent the run: what the engine had around it (niced = the store
    writer's materializer; steal = time the hypervisor gave to other guests)."""
    if not before or not after or len(before) != len(after):
        return "n/a"
    d = [b - a for a, b in zip(before, after)]
    total = sum(d) or 1
    return ", ".join(f"{k} {v / total:.0%}" for k, v in zip(_STAT_FIELDS, d) if k not in ("irq",))


def _pct(sorted_vals: list[float], p: float) -> float:
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


class _Status(msgspec.Struct):
    status: str


class _Answer(msgspec.Struct):
    """Just what the generator reads of an answer: decoding whole decisions would slow the load."""

    id: int
    ok: bool = True
    results: list[_Status] | None = None


def drive(endpoint: str, frames: list[tuple[bytes, int]], window: int) -> tuple[list[float], collections.Counter, float]:
    """Send all frames keeping at most `window` orders in flight; returns per-order latencies (s)."""
    gc.collect()
    gc.freeze()  # the pre-encoded frames are long-lived: keep the collector off them
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    decode = msgspec.msgpack.Decoder(_Answer).decode
    sent_at: dict[int, tuple[float, int]] = {}
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    in_flight = 0
    it = iter(enumerate(frames, start=1))
    nxt = next(it, None)
    started = time.perf_counter()
    while nxt is not None or sent_at:
        while nxt is not None and (in_flight + nxt[1][1] <= window or not sent_at):
            rid, (frame, count) = nxt
            sent_at[rid] = (time.perf_counter(), count)
            sock.send(frame, copy=False)
            in_flight += count
            nxt = next(it, None)
        if not sock.poll(30_000):
            raise RuntimeError("engine stopped answering")
        while True:
            try:
                raw = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            now = time.perf_counter()
            resp = decode(raw.buffer)
            t0, count = sent_at.pop(resp.id)
            in_flight -= count
            if count:
                lat = now - t0
                latencies.extend([lat] * count)
                for d in resp.results or ():
                    statuses[d.status] += 1
    elapsed = time.perf_counter() - started
    sock.close()
    return latencies, statuses, elapsed


def main(orders: int = 200_000, window: int = 100, batch: int = 10, tick_every: int = 20, keep: bool = False) -> int:
    if orders <= 0 or window <= 0 or batch <= 0 or batch > window:
        raise SystemExit("need orders > 0 and 0 < batch <= window")
    work = Path(tempfile.mkdtemp(prefix="wojak-bench-"))
    engine = EngineProcess(work, broker={"fill_probability": 0.95, "seed": 42},
                           risk={"max_orders_per_second": 100, "max_position_lots": 10_000,
                                 "max_gross_exposure": 1e13, "max_notional": 1e9, "daily_loss_limit": 1e12})
    try:
        frames = _frames(orders, batch, tick_every)
        engine.start()
        # Warm-up: reference prices for every contract, so market orders and bands have a tick.
        with engine.client() as c:
            c.call("tick", [{"symbol": s, "ltp": p} for s, p in _instruments()])
        procs = {"engine": [engine.proc.pid], "writer": child_pids(engine.proc.pid, b"engine.store.writer"),
                 "outbox": child_pids(engine.proc.pid, b"engine.outbox"), "generator": [os.getpid()]}
        cpu_before = {k: sum(map(_cpu_s, pids)) for k, pids in procs.items()}
        machine_before = _machine_ticks()
        latencies, statuses, elapsed = drive(engine.endpoint, frames, window)
        machine = _machine_share(machine_before, _machine_ticks())
        cpu = {k: sum(map(_cpu_s, pids)) - cpu_before[k] for k, pids in procs.items()}
        engine_rss = _rss_mb(engine.proc.pid)
        writer_rss = sum(map(_rss_mb, procs["writer"]))
        outbox_rss = sum(map(_rss_mb, procs["outbox"]))
        counts = engine.store().counts()
    finally:
        engine.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    latencies.sort()
    n = len(latencies)
    rate = n / elapsed
    gen_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"orders: {n:,}  window: {window}  batch: {batch}  tick every: {tick_every}  elapsed: {elapsed:.2f}s")
    print(f"decisions: {dict(sorted(statuses.items()))}  (store: {counts['orders']:,} orders, {counts['ticks']:,} ticks, "
          f"{counts['pending']} pending)")
    print(f"throughput: {rate:,.0f} orders/s = {rate * 60:,.0f} orders/min")
    print(f"answer latency: p50 {_pct(latencies, 50) * 1e3:.2f} ms  p99 {_pct(latencies, 99) * 1e3:.2f} ms  "
          f"p99.9 {_pct(latencies, 99.9) * 1e3:.2f} ms  max {latencies[-1] * 1e3:.2f} ms")
    print(f"peak RSS: engine {engine_rss:.0f} MiB, store writer {writer_rss:.0f} MiB, outbox {outbox_rss:.0f} MiB, "
          f"load generator {gen_rss:.0f} MiB")
    print("CPU per order: " + ", ".join(f"{k} {v / n * 1e6:.1f} us" for k, v in cpu.items())
          + "  (busy: " + ", ".join(f"{k} {v / elapsed:.0%}" for k, v in cpu.items()) + ")")
    print(f"machine ({os.cpu_count()} cores): {machine}")
    if keep:
        print(f"data kept in {work}")
    print(f"RESULT: {rate * 60:,.0f} orders/min, p99 {_pct(latencies, 99) * 1e3:.2f} ms")
    return 0
