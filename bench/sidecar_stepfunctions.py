"""Benchmark: `wojak sidecar stepfunctions` answering N workflow executions (task-token callback
through SQS) on a local moto server. Each order is its own execution, as in production."""
from __future__ import annotations

from bench.sidecar_bench import Result
from bench.sidecar_sqs import run


def main(n: int = 5000) -> Result:
    from tests.support.moto_server import StepFunctionsFeed

    return run("stepfunctions", lambda server: StepFunctionsFeed(server, "bench", visibility_s=30), n)


if __name__ == "__main__":
    print(main().line())
