"""The wojak image, built for real with podman and inspected with testinfra inside a running
container: the entrypoint, the user, the engine answering `health` over ZeroMQ, and the sidecars'
client libraries."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import testinfra

from engine.client import EngineClient, EngineUnavailable
from tests.support.engine_proc import write_config

pytestmark = pytest.mark.slow


def _podman(*args: str, env: dict[str, str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:4])} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


@pytest.fixture(scope="module")
def engine_container(podman_env, wojak_image, tmp_path_factory):
    """The image's default role: `wojak engine --config ...`, its ipc:// socket on a shared volume."""
    shared = tmp_path_factory.mktemp("engine-vol")
    os.chmod(shared, 0o777)  # the container's non-root user writes its store and socket here
    write_config(shared / "wojak.toml", {
        "engine": {"endpoint": "ipc:///run/wojak/e.sock"},
        "store": {"path": "/run/wojak/data/wojak.db"},
        "escalation": {"path": "/run/wojak/data/escalations.jsonl"},
    })
    name = f"wojak-test-{uuid.uuid4().hex[:8]}"
    _podman("run", "-d", "--name", name, "--network", "none", "-v", f"{shared}:/run/wojak", wojak_image,
            "engine", "--config", "/run/wojak/wojak.toml", env=podman_env)
    try:
        yield name, shared
    finally:
        _podman("rm", "-f", "-t", "2", name, env=podman_env, check=False)


@pytest.fixture(scope="module")
def host(engine_container):
    return testinfra.get_host(f"podman://{engine_container[0]}")


def _health(endpoint: str, deadline_s: float = 30.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with EngineClient(endpoint, timeout_s=1.0) as c:
                return c.call("health").ok
        except EngineUnavailable:
            continue
    return False


def test_image_when_inspected_then_entrypoint_is_wojak_engine_and_user_not_root(podman_env, wojak_image):
    cfg = json.loads(_podman("image", "inspect", wojak_image, env=podman_env).stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["wojak"]
    assert cfg["Cmd"] == ["engine", "--config", "/etc/wojak/wojak.toml"]
    assert cfg["User"] not in ("", "0", "root", "0:0")
    assert cfg["Labels"]["org.opencontainers.image.title"] == "wojak"


def test_run_when_given_help_then_wojak_lists_engine_and_sidecar(podman_env, wojak_image):
    out = _podman("run", "--rm", "--network", "none", wojak_image, "--help", env=podman_env).stdout
    assert "engine" in out and "sidecar" in out


def test_engine_when_started_in_container_then_answers_health_over_zeromq(engine_container):
    name, shared = engine_container
    assert _health(f"ipc://{shared}/e.sock"), f"engine in {name} never answered health"
    assert (shared / "data" / "wojak.db").exists()  # its store lives on the volume, written as the app user


def test_container_when_running_then_process_runs_as_non_root(host, engine_container):
    assert host.user().uid != 0 and host.user().name == "wojak"
    # No ps in a slim image: PID 1 is the entrypoint itself; read its identity from /proc.
    argv = host.file("/proc/1/cmdline").content.split(b"\0")
    assert b"engine" in argv and any(a.endswith(b"/wojak") for a in argv)
    uids = [line.split()[1:] for line in host.file("/proc/1/status").content_string.splitlines()
            if line.startswith("Uid:")][0]
    assert set(uids) == {"10001"}  # real, effective, saved and filesystem uid: never root


def test_container_when_exec_wojak_help_then_console_script_works(host, engine_container):
    cmd = host.run("wojak --help")
    assert cmd.rc == 0 and "sidecar" in cmd.stdout
    assert host.file("/opt/wojak/bin/wojak").exists


def test_container_when_importing_sidecar_clients_then_all_present(host, engine_container):
    cmd = host.run("python -c 'import boto3, pika, confluent_kafka, google.cloud.pubsub, couchbase.cluster, "
                   "zmq, msgspec; print(confluent_kafka.version()[0], couchbase.__version__)'")
    assert cmd.rc == 0, cmd.stderr
    assert "4.6.3" in cmd.stdout


def test_container_when_engine_healthy_then_image_healthcheck_passes(podman_env, engine_container):
    name, shared = engine_container
    assert _health(f"ipc://{shared}/e.sock")
    p = _podman("healthcheck", "run", name, env=podman_env, check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_container_healthcheck_when_env_names_another_endpoint_then_asks_that_one(podman_env, engine_container):
    """A sidecar's engine comes from WOJAK_ENGINE_ENDPOINT: the health check asks where the process does."""
    name, shared = engine_container
    assert _health(f"ipc://{shared}/e.sock")
    check = ["/opt/wojak/bin/python", "/opt/wojak/healthcheck.py"]
    here = _podman("exec", "-e", "WOJAK_ENGINE_ENDPOINT=ipc:///run/wojak/e.sock", name, *check, env=podman_env,
                   check=False)
    assert here.returncode == 0, here.stdout + here.stderr
    gone = _podman("exec", "-e", "WOJAK_ENGINE_ENDPOINT=ipc:///run/wojak/nobody.sock", name, *check,
                   env=podman_env, check=False)
    assert gone.returncode == 1 and "unhealthy" in gone.stderr, gone.stdout + gone.stderr


def test_image_when_inspected_then_no_pip_settings_or_sources_tree_left(host, engine_container):
    assert not host.file("/src").exists
    assert not host.file("/run/secrets/pipconf").exists
    assert not host.file("/etc/pip.conf").exists
