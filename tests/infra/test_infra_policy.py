"""The policy pack's validators, run on the recorded resources (clean) and on broken copies of
them (each rule must report its violation: a check that cannot fail is a defect)."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra_testkit import Reporter, as_policy_args
from infra.policy import rules


def run_resource_rules(resources):
    found = {}
    for name, fn in rules.RESOURCE_RULES.items():
        rep = Reporter()
        for r in resources:
            fn(as_policy_args(r), rep)
        found[name] = rep.violations
    return found


@pytest.mark.parametrize("rule", sorted(rules.RESOURCE_RULES))
def test_recorded_stacks_pass_rule(sim, rule):
    rep = Reporter()
    for r in sim.resources:
        rules.RESOURCE_RULES[rule](as_policy_args(r), rep)
    assert rep.violations == [], rep.violations


def test_recorded_stacks_pass_xdcr_bidirectional(sim):
    rep = Reporter()
    rules.xdcr_bidirectional(SimpleNamespace(resources=[as_policy_args(r) for r in sim.resources]), rep)
    assert rep.violations == []


def first(sim, typ, role=None):
    for r in sim.resources:
        if r.typ == typ and (role is None or rules.tags_of(r.typ, r.inputs).get("role") == role):
            return r
    raise LookupError(f"{sim.stack}: no {typ} {role}")


def broken(r, mutate):
    """A deep copy of a recorded resource with one thing wrong."""
    inputs = copy.deepcopy(dict(r.inputs))
    mutate(inputs)
    return dataclasses.replace(r, inputs=inputs)


def check(rule, resource) -> list[str]:
    rep = Reporter()
    rule(as_policy_args(resource), rep)
    return rep.violations


def test_data_node_on_aws_spot_is_reported(simulations):
    r = first(simulations["aws"], rules.AWS_INSTANCE, "couchbase-data")
    bad = broken(r, lambda p: p.update(instanceMarketOptions={"marketType": "spot"}))
    (msg,) = check(rules.data_nodes_not_spot, bad)
    assert msg.startswith("DATA_ON_SPOT:") and r.urn in msg


def test_data_node_on_gcp_spot_is_reported(simulations):
    r = first(simulations["gcp"], rules.GCP_INSTANCE, "couchbase-data")
    bad = broken(r, lambda p: p["scheduling"].update(provisioningModel="SPOT"))
    assert check(rules.data_nodes_not_spot, bad)[0].startswith("DATA_ON_SPOT:")


def test_data_node_without_reserved_flag_is_reported(simulations):
    r = first(simulations["aws"], rules.AWS_INSTANCE, "couchbase-data")
    bad = broken(r, lambda p: p["tags"].pop("wojak:reserved"))
    assert check(rules.data_nodes_not_spot, bad)[0].startswith("NO_RESERVED_FLAG:")


def test_on_demand_share_in_spot_group_is_reported(simulations):
    r = first(simulations["aws"], rules.AWS_ASG, "app")
    bad = broken(r, lambda p: p["mixedInstancesPolicy"]["instancesDistribution"].update(onDemandBaseCapacity=1))
    assert check(rules.spot_roles_on_spot, bad)[0].startswith("NOT_SPOT:")


def test_single_instance_type_spot_group_is_reported(simulations):
    r = first(simulations["aws"], rules.AWS_ASG, "couchbase-query")
    bad = broken(r, lambda p: p["mixedInstancesPolicy"]["launchTemplate"].update(overrides=[{"instanceType": "c5.large"}]))
    assert check(rules.spot_roles_on_spot, bad)[0].startswith("SINGLE_TYPE:")


def test_standard_gcp_template_for_query_nodes_is_reported(simulations):
    r = first(simulations["gcp"], rules.GCP_TEMPLATE, "couchbase-query")
    bad = broken(r, lambda p: p.update(scheduling={"provisioningModel": "STANDARD", "preemptible": False}))
    assert check(rules.spot_roles_on_spot, bad)[0].startswith("NOT_SPOT:")


def test_non_bottlerocket_vm_is_reported(simulations):
    r = first(simulations["aws"], rules.AWS_INSTANCE)
    bad = broken(r, lambda p: p["tags"].update({"wojak:os": "ubuntu"}))
    assert check(rules.container_optimized_image, bad)[0].startswith("NOT_CONTAINER_OS:")


def test_non_cos_gcp_image_is_reported(simulations):
    r = first(simulations["gcp"], rules.GCP_TEMPLATE)
    bad = broken(r, lambda p: p["disks"][0].update(sourceImage="projects/debian-cloud/global/images/debian-12"))
    assert check(rules.container_optimized_image, bad)[0].startswith("NOT_CONTAINER_OS:")


def test_world_open_ssh_is_reported_on_every_rule_shape(simulations):
    aws_rule = first(simulations["aws"], rules.AWS_SG_INGRESS)
    bad_aws = broken(aws_rule, lambda p: p.update(cidrIpv4="0.0.0.0/0", fromPort=22, toPort=22, ipProtocol="tcp"))
    assert check(rules.no_public_ssh, bad_aws)[0].startswith("PUBLIC_SSH:")
    fw = next(r for r in simulations["gcp"].of_type(rules.GCP_FIREWALL) if r.name.endswith("iap-ssh"))
    bad_fw = broken(fw, lambda p: p.update(sourceRanges=["0.0.0.0/0"]))
    assert check(rules.no_public_ssh, bad_fw)[0].startswith("PUBLIC_SSH:")
    all_traffic = SimpleNamespace(resource_type=rules.AWS_SG_RULE, urn="urn:x",
                                  props={"type": "ingress", "protocol": "-1", "cidrBlocks": ["0.0.0.0/0"]})
    rep = Reporter()
    rules.no_public_ssh(all_traffic, rep)
    assert rep.violations and rep.violations[0].startswith("PUBLIC_SSH:")


def test_iap_range_on_22_is_not_public_ssh(simulations):
    fw = next(r for r in simulations["gcp"].of_type(rules.GCP_FIREWALL) if r.name.endswith("iap-ssh"))
    assert fw.inputs["sourceRanges"] == ["35.235.240.0/20"]
    assert check(rules.no_public_ssh, fw) == []


def test_public_couchbase_port_is_reported(simulations):
    xdcr_rule = next(r for r in simulations["aws"].of_type(rules.AWS_SG_INGRESS) if "xdcr" in r.name)
    bad = broken(xdcr_rule, lambda p: p.update(cidrIpv4="203.0.113.0/24"))
    (msg,) = check(rules.couchbase_ports_private, bad)
    assert msg.startswith("PUBLIC_COUCHBASE:") and "203.0.113.0/24" in msg
    fw = next(r for r in simulations["multicloud"].of_type(rules.GCP_FIREWALL) if r.name.endswith("cb-xdcr"))
    bad_fw = broken(fw, lambda p: p.update(sourceRanges=["198.51.100.7/32"]))
    assert check(rules.couchbase_ports_private, bad_fw)[0].startswith("PUBLIC_COUCHBASE:")


def test_gcp_ingress_without_sources_counts_as_world(simulations):
    fw = next(r for r in simulations["gcp"].of_type(rules.GCP_FIREWALL) if r.name.endswith("cb-members"))
    bad = broken(fw, lambda p: (p.pop("sourceTags"), p.update(allows=[{"protocol": "tcp", "ports": ["22", "8091"]}])))
    assert check(rules.couchbase_ports_private, bad)
    assert check(rules.no_public_ssh, bad)


def test_untagged_compute_is_reported(simulations):
    r = first(simulations["gcp"], rules.GCP_INSTANCE)
    bad = broken(r, lambda p: p["labels"].pop("wojak-role"))
    assert check(rules.compute_tagged, bad)[0].startswith("UNTAGGED:")
    asg = first(simulations["aws"], rules.AWS_ASG)
    bad_asg = broken(asg, lambda p: p.update(tags=[t for t in p["tags"] if t["key"] != "wojak:lifecycle"]))
    assert check(rules.compute_tagged, bad_asg)[0].startswith("UNTAGGED:")


def test_lifecycle_that_contradicts_role_is_reported(simulations):
    r = first(simulations["aws"], rules.AWS_LAUNCH_TEMPLATE, "app")
    bad = broken(r, lambda p: p["tagSpecifications"][0]["tags"].update({"wojak:lifecycle": "on-demand"}))
    assert check(rules.compute_tagged, bad)[0].startswith("LIFECYCLE_MISMATCH:")


def test_one_way_xdcr_is_reported(simulations):
    reps = simulations["multicloud"].of_type(rules.XDCR)
    rep = Reporter()
    rules.xdcr_bidirectional(SimpleNamespace(resources=[as_policy_args(reps[0])]), rep)
    assert rep.violations and rep.violations[0].startswith("XDCR_ONE_WAY:")


def test_pack_entry_declares_every_rule_mandatory(monkeypatch):
    """Load infra/policy/__main__.py with a stand-in PolicyPack (the real one starts a server)."""
    import pulumi_policy

    made = {}

    class FakePack:
        def __init__(self, name, policies, enforcement_level):
            made.update(name=name, policies=policies, level=enforcement_level)

    monkeypatch.setattr(pulumi_policy, "PolicyPack", FakePack)
    path = Path(rules.__file__).with_name("__main__.py")
    spec = importlib.util.spec_from_file_location("wojak_policy_entry", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert made["level"] == pulumi_policy.EnforcementLevel.MANDATORY
    assert {p.name for p in made["policies"]} == set(rules.RESOURCE_RULES) | set(rules.STACK_RULES)
    sys.modules.pop("wojak_policy_entry", None)
