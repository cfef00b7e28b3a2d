"""Benchmark: `wojak sidecar sqs` draining N orders from an SQS queue on a local moto server.
The AWS benches share `run` (here): start moto, build the source's feed, measure, stop."""
from __future__ import annotations

from typing import Callable

from bench.sidecar_bench import Result, measure


def run(source: str, make_feed: Callable, n: int) -> Result:
    from tests.support.moto_server import start_moto

    server = start_moto()
    try:
        feed = make_feed(server)
        return measure(source, feed.publish, feed.sidecar_env(), n)
    finally:
        server.stop()


def main(n: int = 5000) -> Result:
    from tests.support.moto_server import SqsFeed

    return run("sqs", lambda server: SqsFeed(server, "bench", visibility_s=30), n)


if __name__ == "__main__":
    print(main().line())
