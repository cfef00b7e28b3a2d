"""Benchmark: `wojak sidecar kinesis` draining N orders from a 2-shard Kinesis stream on a local moto
server, checkpointing in the engine's store."""
from __future__ import annotations

from bench.sidecar_bench import Result
from bench.sidecar_sqs import run


def main(n: int = 5000) -> Result:
    from tests.support.moto_server import KinesisFeed

    return run("kinesis", lambda server: KinesisFeed(server, "bench", shards=2), n)


if __name__ == "__main__":
    print(main().line())
