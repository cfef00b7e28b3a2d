"""Benchmark: `wojak sidecar sns` draining N orders published to an SNS topic (enveloped delivery
to its subscribed SQS queue) on a local moto server."""
from __future__ import annotations

from bench.sidecar_bench import Result
from bench.sidecar_sqs import run


def main(n: int = 5000) -> Result:
    from tests.support.moto_server import SnsFeed

    return run("sns", lambda server: SnsFeed(server, "bench", visibility_s=30), n)


if __name__ == "__main__":
    print(main().line())
