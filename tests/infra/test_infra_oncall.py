"""On-call commands: pure argv builders, and role lookup against moto."""

from __future__ import annotations

import pytest

from infra.ops import oncall
from test_infra_fault_inject import launch


def test_ssm_argv():
    assert oncall.ssm_argv("i-0123", "ap-south-1") == [
        "aws", "ssm", "start-session", "--target", "i-0123", "--region", "ap-south-1"
    ]
    with pytest.raises(ValueError):
        oncall.ssm_argv("aws-cb-data-0", "ap-south-1")


def test_iap_argv_always_tunnels():
    argv = oncall.iap_argv("gcp-cb-data-0", "asia-south1-a", "proj")
    assert argv[:4] == ["gcloud", "compute", "ssh", "gcp-cb-data-0"]
    assert "--tunnel-through-iap" in argv and argv[argv.index("--zone") + 1] == "asia-south1-a"


def test_argv_for_dispatches_by_cloud():
    assert oncall.argv_for(oncall.Node("aws", "i-1", "app", region="r"))[1] == "ssm"
    assert oncall.argv_for(oncall.Node("gcp", "n", "app", zone="z"))[0] == "gcloud"
    with pytest.raises(ValueError):
        oncall.argv_for(oncall.Node("azure", "n", "app"))


def test_main_finds_a_node_by_role(ec2, capsys):
    ids = launch(ec2, 2, "aws", "couchbase-data", "on-demand", spot=False)
    rc = oncall.main(["aws", "--stack", "aws", "--role", "couchbase-data", "--index", "1", "--region", "ap-south-1"], ec2=ec2)
    out = capsys.readouterr().out.split()
    assert rc == 0 and out[:4] == ["aws", "ssm", "start-session", "--target"] and out[4] == sorted(ids)[1]


def test_main_gcp_prints_the_iap_command(capsys):
    assert oncall.main(["gcp", "--instance", "gcp-app-x", "--zone", "asia-south1-b"]) == 0
    assert "--tunnel-through-iap" in capsys.readouterr().out


def test_main_without_nodes_fails(ec2):
    assert oncall.main(["aws", "--stack", "none", "--role", "app"], ec2=ec2) == 1
