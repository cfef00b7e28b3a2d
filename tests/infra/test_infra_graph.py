"""The declared graph of every stack in stacks/, run under mocks: one invariant per test."""

from __future__ import annotations

import collections
import ipaddress
import json
from pathlib import Path

from infra.network import is_private_range
from infra.policy import rules
from infra.simulate import MOCK_SECRET
from infra.tags import LIFECYCLE_BY_ROLE, ROLE_APP, ROLE_DATA, ROLE_QUERY

GCP_MIG = "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"
AWS_TASK = "aws:ecs/taskDefinition:TaskDefinition"


def compute(sim):
    return [r for r in sim.resources if r.typ in rules.COMPUTE_TYPES]


def role(r):
    return rules.tags_of(r.typ, r.inputs).get("role")


def test_every_stack_declares_compute_for_each_of_its_clouds(sim):
    clouds = {r.typ.split(":")[0] for r in compute(sim)} - {"kubernetes"}
    assert clouds == set(sim.outputs["clouds"]), sim.stack


def test_data_nodes_are_never_spot(sim):
    data = [r for r in compute(sim) if role(r) == ROLE_DATA]
    assert data, f"{sim.stack}: no data nodes declared"
    for r in data:
        assert r.typ in (rules.AWS_INSTANCE, rules.GCP_INSTANCE), f"{r.urn}: data node in a group"
        if r.typ == rules.AWS_INSTANCE:
            assert (r.inputs.get("instanceMarketOptions") or {}).get("marketType") != "spot", r.urn
        else:
            sched = r.inputs["scheduling"]
            assert sched["provisioningModel"] == "STANDARD" and not sched.get("preemptible"), r.urn


def test_data_nodes_record_the_reserved_flag(sim):
    for r in compute(sim):
        if role(r) == ROLE_DATA:
            assert rules.tags_of(r.typ, r.inputs).get("reserved") == "true", r.urn


def test_query_nodes_and_app_vms_are_always_spot(sim):
    groups = [r for r in compute(sim) if role(r) in (ROLE_QUERY, ROLE_APP) and r.typ != rules.K8S_DEPLOYMENT]
    assert {role(r) for r in groups} == {ROLE_QUERY, ROLE_APP}, sim.stack
    for r in groups:
        if r.typ == rules.AWS_ASG:
            dist = r.inputs["mixedInstancesPolicy"]["instancesDistribution"]
            assert dist["onDemandBaseCapacity"] == 0, r.urn
            assert dist["onDemandPercentageAboveBaseCapacity"] == 0, r.urn
            assert dist["spotAllocationStrategy"] == "capacity-optimized", r.urn
            assert len(r.inputs["mixedInstancesPolicy"]["launchTemplate"]["overrides"]) >= 2, r.urn
        elif r.typ == rules.GCP_TEMPLATE:
            assert r.inputs["scheduling"]["provisioningModel"] == "SPOT", r.urn
        elif r.typ == rules.AWS_LAUNCH_TEMPLATE:
            # the ASG decides the market; market options here would conflict with it
            assert "instanceMarketOptions" not in r.inputs, r.urn
        else:
            raise AssertionError(f"{r.urn}: spot role outside a spot group ({r.typ})")


def test_every_aws_vm_boots_the_bottlerocket_lookup(sim):
    lookups = [c for c in sim.calls if c[0] == "aws:ec2/getAmi:getAmi"]
    bottlerocket = {
        res["id"]
        for _, args, res in lookups
        if args.get("owners") == ["amazon"]
        and any(v.startswith("bottlerocket-") for f in args["filters"] for v in f["values"])
    }
    for r in sim.resources:
        if r.typ == rules.AWS_INSTANCE:
            assert r.inputs["ami"] in bottlerocket, r.urn
        if r.typ == rules.AWS_LAUNCH_TEMPLATE:
            assert r.inputs["imageId"] in bottlerocket, r.urn


def test_every_gcp_vm_boots_container_optimized_os(sim):
    for r in sim.resources:
        if r.typ == rules.GCP_INSTANCE:
            assert r.inputs["bootDisk"]["initializeParams"]["image"].startswith("projects/cos-cloud/"), r.urn
        if r.typ == rules.GCP_TEMPLATE:
            boot = [d for d in r.inputs["disks"] if d.get("boot")]
            assert boot and boot[0]["sourceImage"].startswith("projects/cos-cloud/"), r.urn


def _ingress(sim):
    for r in sim.resources:
        for cidrs, ranges in rules._ingress(r.typ, r.inputs):
            yield r, cidrs, ranges


def test_port_22_is_never_open_to_the_internet(sim):
    for r, cidrs, ranges in _ingress(sim):
        if any(lo <= 22 <= hi for lo, hi in ranges):
            assert not any(ipaddress.ip_network(c).prefixlen == 0 for c in cidrs), r.urn


def test_couchbase_ports_are_never_public(sim):
    for r, cidrs, ranges in _ingress(sim):
        if rules._overlaps(ranges, rules.COUCHBASE_PORTS):
            assert all(is_private_range(c) for c in cidrs), f"{r.urn}: {cidrs}"


def test_every_vm_has_no_public_address(sim):
    for r in sim.resources:
        if r.typ == rules.AWS_INSTANCE:
            assert not r.inputs.get("associatePublicIpAddress"), r.urn
        if r.typ in (rules.GCP_INSTANCE, rules.GCP_TEMPLATE):
            for nic in r.inputs["networkInterfaces"]:
                assert not nic.get("accessConfigs"), r.urn


def test_xdcr_is_declared_in_both_directions_when_two_clusters_meet(sim):
    pairs = {(r.inputs["source_name"], r.inputs["target_name"]) for r in sim.of_type(rules.XDCR)}
    if sim.stack == "aws":
        assert not pairs, "the first stack has no peer yet"
        return
    assert pairs == {("wojak-aws", "wojak-gcp"), ("wojak-gcp", "wojak-aws")}, sim.stack


def test_multicloud_xdcr_points_each_cluster_at_the_other(simulations):
    reps = {r.inputs["source_name"]: r.inputs for r in simulations["multicloud"].of_type(rules.XDCR)}
    assert reps["wojak-aws"]["source_host"].startswith("cb-data-0.aws.")
    assert reps["wojak-aws"]["target_host"].startswith("cb-data-0.gcp.")
    assert reps["wojak-gcp"]["source_host"].startswith("cb-data-0.gcp.")
    assert reps["wojak-gcp"]["target_host"].startswith("cb-data-0.aws.")
    assert all(r["buckets"] == ["wojak"] for r in reps.values())


def test_second_cloud_stack_takes_the_first_through_a_stack_reference(simulations):
    refs = simulations["gcp"].of_type("pulumi:pulumi:StackReference")
    assert [r.inputs["name"] for r in refs] == ["example-org/wojak/aws"]


def test_resource_names_are_unique(sim):
    counts = collections.Counter(r.name for r in sim.resources)
    dupes = {n: c for n, c in counts.items() if c > 1}
    assert not dupes, f"{sim.stack}: duplicate names {dupes}"


def test_every_compute_resource_is_tagged(sim):
    for r in compute(sim):
        tags = rules.tags_of(r.typ, r.inputs)
        assert tags.get("stack") == sim.stack, r.urn
        assert tags.get("role") in LIFECYCLE_BY_ROLE, r.urn
        assert tags.get("lifecycle") == LIFECYCLE_BY_ROLE[tags["role"]], r.urn


def test_gcp_labels_use_no_colon(sim):
    for r in sim.resources:
        if r.typ.startswith("gcp:") and r.inputs.get("labels"):
            assert all(":" not in k for k in r.inputs["labels"]), r.urn


def test_secrets_only_reach_secret_stores(sim):
    allowed = {
        "aws:secretsmanager/secretVersion:SecretVersion",
        "gcp:secretmanager/secretVersion:SecretVersion",
        "kubernetes:core/v1:Secret",
        rules.XDCR,
    }
    for r in sim.resources:
        if r.typ not in allowed:
            assert MOCK_SECRET not in json.dumps(r.inputs, default=str), r.urn


def _secret_leaks(value, inside_secret=False, path=()):
    """Paths where the stand-in secret appears outside a Pulumi secret envelope."""
    from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key

    if isinstance(value, dict):
        inside = inside_secret or value.get(_special_sig_key) == _special_secret_sig
        return [p for k, v in value.items() for p in _secret_leaks(v, inside, path + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _secret_leaks(v, inside_secret, path + (i,))]
    if isinstance(value, str) and MOCK_SECRET in value and not inside_secret:
        return [path]
    return []


def test_secret_values_only_travel_as_pulumi_secrets(sim):
    for r in sim.resources:
        assert not _secret_leaks(dict(r.inputs)), f"{r.urn}: {_secret_leaks(dict(r.inputs))}"


def test_ecs_tasks_take_secrets_by_reference(sim):
    for r in sim.of_type(AWS_TASK):
        for c in json.loads(r.inputs["containerDefinitions"]):
            plain = {e["name"] for e in c["environment"]}
            assert not plain & {"WOJAK_COUCHBASE_PASSWORD", "CB_PASSWORD", "WOJAK_CURVE_SERVER_SECRET"}, r.urn
            for s in c["secrets"]:
                assert s["valueFrom"].startswith("arn:") and s["valueFrom"].endswith("::"), r.urn


def test_app_task_runs_engine_and_each_configured_sidecar(simulations):
    sim = simulations["aws"]
    (task,) = [r for r in sim.of_type(AWS_TASK) if r.name == "aws-app-task"]
    defs = {c["name"]: c for c in json.loads(task.inputs["containerDefinitions"])}
    assert defs["engine"]["command"] == ["engine", "--config", "/etc/wojak/wojak.toml"]
    assert defs["sidecar-sqs"]["command"] == ["sidecar", "sqs"]
    assert defs["sidecar-http"]["command"] == ["sidecar", "http"]
    env = {e["name"]: e["value"] for e in defs["sidecar-sqs"]["environment"]}
    assert env["WOJAK_ENGINE_ENDPOINT"] == "ipc:///run/wojak/engine.sock"
    assert env["WOJAK_SQS_QUEUE_URL"].startswith("https://sqs.")
    assert {s["name"] for s in defs["engine"]["secrets"]} == {"WOJAK_COUCHBASE_PASSWORD"}
    engine_env = {e["name"]: e["value"] for e in defs["engine"]["environment"]}
    assert engine_env["WOJAK_COUCHBASE_CONNSTR"] == "couchbase://cb.aws.wojak.internal"
    # the engine's config: the cloud's Couchbase scope; its files on a directory of the node, which the
    # config step (the only container run as root) hands to the image's user with the socket's volume
    config = defs["config"]
    toml = {e["name"]: e["value"] for e in config["environment"]}["WOJAK_CONFIG_TOML"]
    assert 'kind = "couchbase"' in toml and 'scope = "wojak-aws"' in toml
    assert config["user"] == "0" and "chown 10001:10001 /run/wojak /var/lib/wojak/data" in config["command"][0]
    mounts = {c: {m["sourceVolume"]: m["containerPath"] for m in d["mountPoints"]} for c, d in defs.items()}
    assert mounts["config"]["wojak-data"] == mounts["engine"]["wojak-data"] == "/var/lib/wojak/data"
    assert "wojak-data" not in mounts["sidecar-sqs"] and "user" not in defs["engine"]
    volumes = {v["name"]: v for v in task.inputs["volumes"]}
    assert volumes["wojak-data"]["hostPath"] == "/local/wojak/data"


def test_data_nodes_are_registered_in_private_dns(sim):
    a_records = {r.inputs["name"] for r in sim.resources if r.typ.endswith("record:Record") and r.inputs["type"] == "A"}
    a_records |= {r.inputs["name"].rstrip(".") for r in sim.resources
                  if r.typ == "gcp:dns/recordSet:RecordSet" and r.inputs["type"] == "A"}
    data = [r for r in compute(sim) if role(r) == ROLE_DATA]
    assert len(a_records) == len(data), sim.stack
    zones = [r for r in sim.resources if r.typ in ("aws:route53/zone:Zone", "gcp:dns/managedZone:ManagedZone")]
    for z in zones:
        assert z.inputs.get("vpcs") or z.inputs.get("visibility") == "private", z.urn


def test_couchbase_services_split_by_role(sim):
    for r in sim.of_type(AWS_TASK):
        if "couchbase" in r.inputs["family"]:
            script = json.loads(r.inputs["containerDefinitions"])[1]["command"][0]
            want = "SERVICES=data" if r.inputs["family"].endswith("-data") else "SERVICES=index,query"
            assert want in script, r.urn


def test_kubernetes_pod_shares_a_volume_and_lands_on_spot(simulations):
    (dep,) = simulations["gcp"].of_type(rules.K8S_DEPLOYMENT)
    pod = dep.inputs["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["engine", "sidecar-http", "sidecar-pubsub"], dep.urn
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0] == {"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}
    assert any(t["key"] == "cloud.google.com/gke-spot" for t in pod["tolerations"])
    for c in pod["containers"]:
        assert c["resources"]["limits"] and c["resources"]["requests"], dep.urn
        env = {e["name"]: e for e in c["env"]}
        assert env["WOJAK_ENGINE_ENDPOINT"]["value"] == "tcp://127.0.0.1:5555"  # curve transport
        secret_key = "WOJAK_CURVE_SERVER_SECRET" if c["name"] == "engine" else "WOJAK_CURVE_CLIENT_SECRET"
        assert "secretKeyRef" in env[secret_key]["valueFrom"], dep.urn
    (engine,) = [c for c in pod["containers"] if c["name"] == "engine"]
    # a read-only root: the engine's files on a volume of the pod; its store the cloud's Couchbase scope
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in pod["containers"])
    assert {"name": "data", "mountPath": "/var/lib/wojak/data"} in engine["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}["data"]["emptyDir"] == {}
    (cm,) = simulations["gcp"].of_type("kubernetes:core/v1:ConfigMap")
    assert 'kind = "couchbase"' in cm.inputs["data"]["wojak.toml"] and 'scope = "wojak-gcp"' in cm.inputs["data"]["wojak.toml"]
    notes = dep.inputs["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert [{"containerPort": int(notes["prometheus.io/port"])}] == engine["ports"]  # where it serves them
    probe = engine["livenessProbe"]["exec"]["command"]
    dockerfile = (Path(__file__).resolve().parents[2] / "images" / "Dockerfile").read_text()
    assert f"CMD {json.dumps(probe)}" in dockerfile  # the image's own HEALTHCHECK
    assert engine["startupProbe"]["exec"] == engine["livenessProbe"]["exec"]
    assert engine["startupProbe"]["failureThreshold"] * engine["startupProbe"]["periodSeconds"] >= 300
    assert all("livenessProbe" not in c for c in pod["containers"] if c["name"] != "engine")
    pdbs = simulations["gcp"].of_type("kubernetes:policy/v1:PodDisruptionBudget")
    assert pdbs and pdbs[0].inputs["spec"]["minAvailable"] == 1


def test_outputs_name_every_node_by_role(sim):
    for cloud in sim.outputs["clouds"]:
        nodes = sim.outputs["nodes"][cloud]
        assert set(nodes) == {ROLE_DATA, ROLE_QUERY, ROLE_APP}, sim.stack
        assert [n["name"] for n in nodes[ROLE_DATA]] == [f"{cloud}-cb-data-{i}" for i in range(3)]


def test_secret_leak_check_catches_a_plain_secret():
    from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key

    assert _secret_leaks({"userData": f"PASSWORD={MOCK_SECRET}"}) == [("userData",)]
    assert _secret_leaks({"x": {_special_sig_key: _special_secret_sig, "value": MOCK_SECRET}}) == []


def _cloud_config(r):
    import yaml

    meta = r.inputs["metadata"]
    assert meta["enable-oslogin"] == "TRUE", r.urn
    doc = yaml.safe_load(meta["user-data"])
    return {f["path"]: f["content"] for f in doc["write_files"]}, doc["runcmd"]


def test_gcp_data_nodes_mount_their_disk_and_start_couchbase(simulations):
    for r in simulations["multicloud"].of_type(rules.GCP_INSTANCE):
        files, cmds = _cloud_config(r)
        assert "google-couchbase-data" in cmds[0] and "mkfs.ext4" in cmds[0], r.urn
        assert "SERVICES=data" in files["/var/lib/wojak/bootstrap.sh"], r.urn
        assert "-v /mnt/disks/couchbase:/opt/couchbase/var" in files["/etc/systemd/system/couchbase.service"]
        assert cmds[-1] == "systemctl start couchbase.service couchbase-bootstrap.service"
        assert r.inputs["attachedDisks"][0]["deviceName"] == "couchbase-data"


def test_gcp_app_vms_run_engine_and_sidecars_with_secrets_from_secret_manager(simulations):
    (tpl,) = [r for r in simulations["gcp"].of_type(rules.GCP_TEMPLATE) if role(r) == ROLE_APP]
    files, cmds = _cloud_config(tpl)
    engine = files["/etc/systemd/system/wojak-engine.service"]
    assert "engine --config /etc/wojak/wojak.toml" in engine
    assert "sidecar pubsub" in files["/etc/systemd/system/wojak-sidecar-pubsub.service"]
    assert "WOJAK_PUBSUB_SUBSCRIPTION=" in files["/var/lib/wojak/sidecar-pubsub.env"]
    fetch = files["/var/lib/wojak/secrets.sh"]
    for name in ("WOJAK_COUCHBASE_PASSWORD", "WOJAK_CURVE_SERVER_SECRET", "WOJAK_CURVE_CLIENT_SECRET"):
        assert name in fetch and name not in files["/var/lib/wojak/engine.env"]
    assert 'endpoint = "tcp://0.0.0.0:5555"' in files["/var/lib/wojak/etc/wojak.toml"]
    assert 'scope = "wojak-gcp"' in files["/var/lib/wojak/etc/wojak.toml"]
    assert "-v /var/lib/wojak/data:/var/lib/wojak/data " in engine
    assert "/var/lib/wojak/data" not in files["/etc/systemd/system/wojak-sidecar-pubsub.service"]
    assert cmds.index("chown 10001:10001 /run/wojak /var/lib/wojak/data") < len(cmds) - 1  # before they start
    assert cmds[-1].startswith("systemctl start wojak-engine.service")
