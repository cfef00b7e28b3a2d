"""Spot fault injection against a moto EC2 server on 127.0.0.1."""

from __future__ import annotations

import random

import pytest

from infra.ops import fault_inject

FAKE_AMI = "ami-0fa0e0000000000aa"


def launch(ec2, count, stack, role, lifecycle_tag, spot=True):
    kwargs = {}
    if spot:
        kwargs["InstanceMarketOptions"] = {"MarketType": "spot"}
    res = ec2.run_instances(
        ImageId=FAKE_AMI,  # moto accepts any id; listing its real catalogue costs seconds
        MinCount=count,
        MaxCount=count,
        InstanceType="c6i.large",
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "wojak:stack", "Value": stack},
                    {"Key": "wojak:role", "Value": role},
                    {"Key": "wojak:lifecycle", "Value": lifecycle_tag},
                    {"Key": "Name", "Value": f"{stack}-{role}"},
                ],
            }
        ],
        **kwargs,
    )
    return [i["InstanceId"] for i in res["Instances"]]


def state(ec2, ids):
    out = {}
    for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
        for i in r["Instances"]:
            out[i["InstanceId"]] = i["State"]["Name"]
    return out


@pytest.fixture
def fleet(ec2):
    return {
        "app": launch(ec2, 3, "aws", "app", "spot"),
        "query": launch(ec2, 2, "aws", "couchbase-query", "spot"),
        "other_stack": launch(ec2, 2, "staging", "app", "spot"),
        # on-demand but mis-tagged as spot: EC2's own lifecycle must protect it
        "mistagged": launch(ec2, 1, "aws", "app", "spot", spot=False),
        # spot by EC2 but tagged on-demand: not ours to touch either
        "untagged_spot": launch(ec2, 1, "aws", "app", "on-demand"),
    }


def test_select_returns_only_spot_instances_of_the_stack_and_role(ec2, fleet):
    got = {t.instance_id for t in fault_inject.select_targets(ec2, "aws", "app")}
    assert got == set(fleet["app"])


def test_dry_run_by_default_terminates_nothing(ec2, fleet):
    outcome = fault_inject.inject(ec2, "aws", "app", count=2)
    assert outcome.dry_run and len(outcome.selected) == 2 and outcome.terminated == ()
    assert set(state(ec2, fleet["app"]).values()) == {"running"}


def test_yes_terminates_exactly_count_spot_instances(ec2, fleet):
    outcome = fault_inject.inject(ec2, "aws", "couchbase-query", count=1, yes=True, rng=random.Random(7))
    assert len(outcome.terminated) == 1 and outcome.terminated[0] in fleet["query"]
    states = state(ec2, fleet["query"] + fleet["app"] + fleet["mistagged"])
    assert sorted(states.values()).count("running") == len(states) - 1
    assert states[outcome.terminated[0]] in ("shutting-down", "terminated")


def test_count_larger_than_the_fleet_takes_what_exists(ec2, fleet):
    outcome = fault_inject.inject(ec2, "aws", "app", count=10, yes=True)
    assert set(outcome.terminated) == set(fleet["app"])
    assert set(state(ec2, fleet["mistagged"] + fleet["untagged_spot"] + fleet["other_stack"]).values()) == {"running"}


@pytest.mark.parametrize(
    "stack,role",
    [("", "app"), ("*", "app"), ("aws", "couchbase-data"), ("aws", ""), ("aws", "anything")],
)
def test_refuses_vague_or_unsafe_selectors(ec2, stack, role):
    with pytest.raises(fault_inject.Refused):
        fault_inject.inject(ec2, stack, role, yes=True)


def test_main_without_yes_is_a_dry_run(ec2, fleet, capsys):
    rc = fault_inject.main(["--stack", "aws", "--role", "app"], ec2=ec2)
    out = capsys.readouterr().out
    assert rc == 0 and "would terminate" in out and "dry run" in out
    assert set(state(ec2, fleet["app"]).values()) == {"running"}


def test_main_with_yes_terminates_through_the_moto_endpoint(ec2, fleet, moto_endpoint, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    rc = fault_inject.main(
        ["--stack", "aws", "--role", "app", "--yes", "--region", "ap-south-1", "--endpoint-url", moto_endpoint]
    )
    assert rc == 0 and "terminated i-" in capsys.readouterr().out
    assert list(state(ec2, fleet["app"]).values()).count("running") == 2


def test_main_requires_stack_and_role(ec2):
    with pytest.raises(SystemExit) as exc:
        fault_inject.main(["--role", "app", "--yes"], ec2=ec2)
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        fault_inject.main(["--stack", "aws", "--role", "couchbase-data", "--yes"], ec2=ec2)


def test_main_reports_an_empty_selection(ec2, capsys):
    assert fault_inject.main(["--stack", "nowhere", "--role", "app", "--yes"], ec2=ec2) == 1


def test_gcp_filter_selects_spot_by_label_and_model():
    f = fault_inject.gcp_spot_filter("gcp", "couchbase-query")
    assert 'labels.wojak-role = "couchbase-query"' in f and 'scheduling.provisioningModel = "SPOT"' in f
    with pytest.raises(fault_inject.Refused):
        fault_inject.gcp_spot_filter("gcp", "couchbase-data")
