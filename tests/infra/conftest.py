"""Fixtures for the platform tests: stacks run once under mocks, fake Couchbase REST servers and
a moto server, all on 127.0.0.1 and started by the tests themselves."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # before `pip install -e .` exists
    sys.path.insert(0, str(REPO))

from infra.simulate import Simulation, simulate, stack_names  # noqa: E402
from infra_testkit import FakeCouchbase, free_port  # noqa: E402

STACKS = stack_names()


# ---------------------------------------------------------------------------------------------
# the program under mocks: every stack once per session


@pytest.fixture(scope="session")
def simulations() -> dict[str, Simulation]:
    return {stack: simulate(stack) for stack in STACKS}


@pytest.fixture(params=STACKS)
def sim(request, simulations) -> Simulation:
    return simulations[request.param]


@pytest.fixture
def couchbase_pair():
    """Two fake clusters (source, target) on 127.0.0.1."""
    with FakeCouchbase(password="src-pass") as a, FakeCouchbase(password="dst-pass") as b:
        yield a, b


# ---------------------------------------------------------------------------------------------
# moto server for EC2


def _moto_binary() -> str:
    local = Path(sys.executable).parent / "moto_server"
    found = str(local) if local.exists() else shutil.which("moto_server")
    if not found:
        pytest.fail("moto_server not found: pip install 'moto[server]' into the venv")
    return found


@pytest.fixture(scope="session")
def moto_endpoint():
    port = free_port()
    proc = subprocess.Popen(
        [_moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def ec2(moto_endpoint):
    import boto3

    req = urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=5):
        pass
    return boto3.client(
        "ec2",
        region_name="ap-south-1",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
