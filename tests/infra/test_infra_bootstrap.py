"""Node bootstrap scripts and boot configs: the right services, join/leave, no secrets inline."""

from __future__ import annotations

import subprocess

import pytest

from infra import images
from infra.config import Bucket, CouchbaseSettings
from infra.couchbase.bootstrap import BootstrapArgs, script, services_for

CB = CouchbaseSettings("7.6.2", "community", "couchbase/server:community-7.6.2", "Administrator",
                       4096, 1024, (Bucket("wojak", 2048, 1),), password=None)  # type: ignore[arg-type]


def make(cloud="aws", role="couchbase-data"):
    return script(BootstrapArgs(cloud, role, "cb-data-0.aws.wojak.internal", "wojak-aws", CB))


def test_multi_dimensional_scaling():
    assert services_for("couchbase-data") == "data"
    assert services_for("couchbase-query") == "index,query"


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
@pytest.mark.parametrize("role", ["couchbase-data", "couchbase-query"])
def test_scripts_are_valid_shell(cloud, role):
    subprocess.run(["sh", "-n"], input=make(cloud, role), text=True, check=True)


def test_seed_initialises_and_creates_buckets_with_zone_as_server_group():
    s = make()
    assert "cluster-init" in s and "--services data" in s
    assert "bucket-create" in s and "--bucket wojak" in s and "--bucket-replica 1" in s
    assert '--group-name "$ZONE"' in s and "setting-autofailover" in s


def test_query_nodes_join_rebalance_and_leave_on_sigterm():
    s = make(role="couchbase-query")
    assert "SERVICES=index,query" in s and "server-add" in s and "rebalance" in s
    assert "trap leave TERM INT" in s and "--server-remove" in s and "--hard" in s


def test_data_nodes_do_not_trap():
    assert "trap leave" not in make()


def test_password_comes_from_the_environment_only():
    s = make()
    assert '"$CB_PASSWORD"' in s and "mock-secret" not in s


def test_bottlerocket_user_data_enables_spot_draining_and_admin_container():
    ud = images.bottlerocket_user_data("wojak-aws", {"wojak.role": "app"}, spot=True)
    assert 'cluster = "wojak-aws"' in ud and "enable-spot-instance-draining = true" in ud
    assert "[settings.host-containers.admin]" in ud and '"wojak.role" = "app"' in ud
    assert "enable-spot-instance-draining = false" in images.bottlerocket_user_data("c", {}, spot=False)


def test_cos_cloud_config_is_yaml_with_files_and_commands():
    import yaml

    doc = yaml.safe_load(images.cos_cloud_config([("/var/lib/wojak/x.sh", "echo 'a: b'\n")], ["systemctl start x: y"]))
    assert doc["write_files"][0]["content"] == "echo 'a: b'\n"
    assert doc["runcmd"] == ["systemctl start x: y"]
