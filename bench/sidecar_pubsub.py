"""Benchmark of the Pub/Sub sidecar: N orders published to a fresh emulator topic first, then the real
`wojak sidecar pubsub` drains them through a real engine (see bench/sidecar_bench.py).

    python -m bench.sidecar_pubsub [N]

Against the emulator this measures the sidecar and the engine, not Google's service: the emulator
is one local Java process (and it ignores server-side flow control, pushing up to 100 messages at a
time into the stream).
"""
from __future__ import annotations

import sys
import warnings

from bench.sidecar_bench import Result, measure


def main(n: int = 5000) -> Result:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")
    from tests.support import pubsub_emulator

    emu = pubsub_emulator.start()
    try:
        emu.create_topic("bench-orders")
        emu.create_topic("bench-orders-dlq")
        emu.create_subscription("bench-orders", "bench-orders-sidecar", ack_deadline_s=30)
        env = {**emu.env(), "WOJAK_PUBSUB_PROJECT": emu.project, "WOJAK_PUBSUB_SUBSCRIPTION": "bench-orders-sidecar",
               "WOJAK_PUBSUB_DLQ_TOPIC": "bench-orders-dlq"}
        return measure("pubsub", lambda payloads: emu.publish("bench-orders", payloads), env, n)
    finally:
        emu.stop()


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000).line())
