"""Pure policy validators over resource inputs in wire (camelCase) form.

Each validator has pulumi-policy's shape `(args, report_violation)`: `args` needs only
`resource_type`, `props`, `urn` (resource rules) or `resources` (stack rules), so tests feed them
the resources recorded under mocks with a fake reporter. Each message starts with a machine code.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable, Mapping, Optional

from infra.couchbase import CLIENT_PORTS, CLUSTER_PORTS, XDCR_PORTS
from infra.network import is_private_range
from infra.tags import LIFECYCLE_BY_ROLE, ROLE_APP, ROLE_DATA, ROLE_QUERY, ROLES

Report = Callable[..., None]

AWS_INSTANCE = "aws:ec2/instance:Instance"
AWS_LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
AWS_ASG = "aws:autoscaling/group:Group"
AWS_SG = "aws:ec2/securityGroup:SecurityGroup"
AWS_SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
AWS_SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
GCP_INSTANCE = "gcp:compute/instance:Instance"
GCP_TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
GCP_FIREWALL = "gcp:compute/firewall:Firewall"
K8S_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
XDCR = "pulumi-python:dynamic/couchbase:XdcrReplication"

COMPUTE_TYPES = (AWS_INSTANCE, AWS_LAUNCH_TEMPLATE, AWS_ASG, GCP_INSTANCE, GCP_TEMPLATE, K8S_DEPLOYMENT)
COUCHBASE_PORTS = tuple(sorted(set(CLIENT_PORTS) | set(CLUSTER_PORTS) | set(XDCR_PORTS)))
SPOT_STRATEGIES = ("capacity-optimized", "capacity-optimized-prioritized", "price-capacity-optimized")


# ---------------------------------------------------------------------------------------------
# reading tags/labels the same way for every compute type


def tags_of(resource_type: str, props: Mapping[str, Any]) -> dict[str, str]:
    """Normalised `{stack, role, lifecycle, os, reserved}` from AWS tags or GCP/K8s labels."""
    raw: dict[str, str] = {}
    if resource_type == AWS_ASG:
        raw = {t.get("key"): t.get("value") for t in props.get("tags") or [] if t.get("propagateAtLaunch")}
    elif resource_type.startswith("aws:"):
        raw = dict(props.get("tags") or {})
        if resource_type == AWS_LAUNCH_TEMPLATE:
            # what matters is what the *instances* get
            for spec in props.get("tagSpecifications") or []:
                if spec.get("resourceType") == "instance":
                    raw = dict(spec.get("tags") or {})
    elif resource_type == K8S_DEPLOYMENT:
        raw = dict(((props.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {})
    else:
        raw = dict(props.get("labels") or {})
    out = {}
    for key, value in raw.items():
        for prefix in ("wojak:", "wojak-"):
            if isinstance(key, str) and key.startswith(prefix):
                out[key[len(prefix) :]] = value
    return out


def _role(args) -> Optional[str]:
    return tags_of(args.resource_type, args.props).get("role")


# ---------------------------------------------------------------------------------------------
# resource rules


def compute_tagged(args, report_violation: Report) -> None:
    """Every compute resource carries stack/role/lifecycle, and lifecycle matches the role."""
    if args.resource_type not in COMPUTE_TYPES:
        return
    tags = tags_of(args.resource_type, args.props)
    missing = [k for k in ("stack", "role", "lifecycle") if not tags.get(k)]
    if missing:
        report_violation(f"UNTAGGED: {args.urn} lacks wojak {', '.join(missing)}", args.urn)
        return
    if tags["role"] not in ROLES:
        report_violation(f"UNKNOWN_ROLE: {args.urn} role={tags['role']}", args.urn)
    elif LIFECYCLE_BY_ROLE[tags["role"]] != tags["lifecycle"]:
        report_violation(
            f"LIFECYCLE_MISMATCH: {args.urn} role={tags['role']} lifecycle={tags['lifecycle']}", args.urn
        )


def _aws_market(props: Mapping[str, Any]) -> Optional[str]:
    return (props.get("instanceMarketOptions") or {}).get("marketType")


def _gcp_spot(props: Mapping[str, Any]) -> bool:
    sched = props.get("scheduling") or {}
    return sched.get("provisioningModel") == "SPOT" or bool(sched.get("preemptible"))


def _asg_all_spot(props: Mapping[str, Any]) -> tuple[bool, str]:
    policy = props.get("mixedInstancesPolicy") or {}
    dist = policy.get("instancesDistribution") or {}
    if not policy:
        return False, "no mixedInstancesPolicy"
    if dist.get("onDemandBaseCapacity", 0) != 0 or dist.get("onDemandPercentageAboveBaseCapacity", 100) != 0:
        return False, (
            f"onDemandBase={dist.get('onDemandBaseCapacity', 0)} "
            f"onDemandAbove={dist.get('onDemandPercentageAboveBaseCapacity', 100)}"
        )
    if dist.get("spotAllocationStrategy") not in SPOT_STRATEGIES:
        return False, f"spotAllocationStrategy={dist.get('spotAllocationStrategy')}"
    return True, ""


def data_nodes_not_spot(args, report_violation: Report) -> None:
    """Couchbase data nodes run on on-demand (reservable) capacity, never spot or a spot group."""
    if _role(args) != ROLE_DATA:
        return
    t, p = args.resource_type, args.props
    if t == AWS_INSTANCE and _aws_market(p) == "spot":
        report_violation(f"DATA_ON_SPOT: {args.urn} instanceMarketOptions.marketType=spot", args.urn)
    elif t in (AWS_ASG, AWS_LAUNCH_TEMPLATE, GCP_TEMPLATE):
        report_violation(f"DATA_IN_GROUP: {args.urn} data nodes are individual on-demand VMs", args.urn)
    elif t == GCP_INSTANCE and _gcp_spot(p):
        report_violation(f"DATA_ON_SPOT: {args.urn} scheduling is SPOT/preemptible", args.urn)
    if t in (AWS_INSTANCE, GCP_INSTANCE) and tags_of(t, p).get("reserved") is None:
        report_violation(f"NO_RESERVED_FLAG: {args.urn} lacks the wojak reserved tag for planning", args.urn)


def spot_roles_on_spot(args, report_violation: Report) -> None:
    """Query/index nodes and app VMs always run on spot; AWS groups mix types, capacity-optimized."""
    role = _role(args)
    if role not in (ROLE_QUERY, ROLE_APP):
        return
    t, p = args.resource_type, args.props
    if t == AWS_ASG:
        ok, why = _asg_all_spot(p)
        if not ok:
            report_violation(f"NOT_SPOT: {args.urn} {why}", args.urn)
        overrides = ((p.get("mixedInstancesPolicy") or {}).get("launchTemplate") or {}).get("overrides") or []
        if len(overrides) < 2:
            report_violation(f"SINGLE_TYPE: {args.urn} spot groups need >= 2 instance types, got {len(overrides)}", args.urn)
    elif t == AWS_INSTANCE and _aws_market(p) != "spot":
        report_violation(f"NOT_SPOT: {args.urn} marketType={_aws_market(p)}", args.urn)
    elif t in (GCP_INSTANCE, GCP_TEMPLATE) and not _gcp_spot(p):
        report_violation(f"NOT_SPOT: {args.urn} provisioningModel={(p.get('scheduling') or {}).get('provisioningModel')}", args.urn)


def container_optimized_image(args, report_violation: Report) -> None:
    """Every VM boots a container-optimized OS: Bottlerocket on AWS, COS (cos-cloud) on GCP.

    AWS image IDs do not say what they are, so the pack checks the `wojak:os` tag and a non-empty
    image; the unit tests additionally check the ID came from the Bottlerocket lookup.
    """
    t, p = args.resource_type, args.props
    if t in (AWS_INSTANCE, AWS_LAUNCH_TEMPLATE):
        image = p.get("ami") if t == AWS_INSTANCE else p.get("imageId")
        os_tag = tags_of(t, p).get("os")
        if os_tag != "bottlerocket" or not image:
            report_violation(f"NOT_CONTAINER_OS: {args.urn} os={os_tag} image={image}", args.urn)
    elif t == GCP_INSTANCE:
        image = ((p.get("bootDisk") or {}).get("initializeParams") or {}).get("image") or ""
        if "cos-cloud" not in image:
            report_violation(f"NOT_CONTAINER_OS: {args.urn} image={image}", args.urn)
    elif t == GCP_TEMPLATE:
        boot = [d for d in p.get("disks") or [] if d.get("boot")]
        image = (boot[0].get("sourceImage") if boot else "") or ""
        if "cos-cloud" not in image:
            report_violation(f"NOT_CONTAINER_OS: {args.urn} image={image}", args.urn)


# ---------------------------------------------------------------------------------------------
# ingress rules: normalised to (sources, port ranges) then judged once


def _is_world(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _is_public(cidr: str) -> bool:
    try:
        return not is_private_range(cidr)
    except ValueError:
        return False  # unknown at preview time: judged at `up`


def _ingress(resource_type: str, props: Mapping[str, Any]) -> Iterable[tuple[list[str], list[tuple[int, int]]]]:
    """Yield (source CIDRs, port ranges) for each ingress a resource opens; all ports = (0, 65535)."""

    def aws_ports(proto, lo, hi) -> list[tuple[int, int]]:
        if str(proto) in ("-1", "all"):
            return [(0, 65535)]
        return [(int(lo or 0), int(hi if hi is not None else lo or 65535))]

    if resource_type == AWS_SG_INGRESS:
        cidrs = [c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if c]
        yield cidrs, aws_ports(props.get("ipProtocol"), props.get("fromPort"), props.get("toPort"))
    elif resource_type == AWS_SG_RULE and props.get("type") == "ingress":
        cidrs = list(props.get("cidrBlocks") or []) + list(props.get("ipv6CidrBlocks") or [])
        yield cidrs, aws_ports(props.get("protocol"), props.get("fromPort"), props.get("toPort"))
    elif resource_type == AWS_SG:
        for rule in props.get("ingress") or []:
            cidrs = list(rule.get("cidrBlocks") or []) + list(rule.get("ipv6CidrBlocks") or [])
            yield cidrs, aws_ports(rule.get("protocol"), rule.get("fromPort"), rule.get("toPort"))
    elif resource_type == GCP_FIREWALL and (props.get("direction") or "INGRESS") == "INGRESS":
        cidrs = list(props.get("sourceRanges") or [])
        if not cidrs and not props.get("sourceTags") and not props.get("sourceServiceAccounts"):
            cidrs = ["0.0.0.0/0"]  # GCP's default source for an ingress rule without sources
        ranges: list[tuple[int, int]] = []
        for allow in props.get("allows") or []:
            ports = allow.get("ports") or []
            if allow.get("protocol") in ("all",) or not ports:
                ranges.append((0, 65535))
            for p in ports:
                lo, _, hi = str(p).partition("-")
                ranges.append((int(lo), int(hi or lo)))
        yield cidrs, ranges


def _overlaps(ranges: Iterable[tuple[int, int]], targets: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    return [t for t in targets for r in ranges if r[0] <= t[1] and t[0] <= r[1]]


def no_public_ssh(args, report_violation: Report) -> None:
    """Port 22 is never open to 0.0.0.0/0 (or ::/0)."""
    for cidrs, ranges in _ingress(args.resource_type, args.props):
        world = [c for c in cidrs if _is_world(c)]
        if world and _overlaps(ranges, [(22, 22)]):
            report_violation(f"PUBLIC_SSH: {args.urn} opens 22 to {', '.join(world)}", args.urn)


def couchbase_ports_private(args, report_violation: Report) -> None:
    """No Couchbase port is reachable from a public address range."""
    for cidrs, ranges in _ingress(args.resource_type, args.props):
        public = [c for c in cidrs if _is_public(c)]
        hit = _overlaps(ranges, COUCHBASE_PORTS)
        if public and hit:
            ports = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in sorted(set(hit)))
            report_violation(f"PUBLIC_COUCHBASE: {args.urn} opens {ports} to {', '.join(public)}", args.urn)


RESOURCE_RULES = {
    "compute-tagged": compute_tagged,
    "data-nodes-not-spot": data_nodes_not_spot,
    "spot-roles-on-spot": spot_roles_on_spot,
    "container-optimized-image": container_optimized_image,
    "no-public-ssh": no_public_ssh,
    "couchbase-ports-private": couchbase_ports_private,
}


# ---------------------------------------------------------------------------------------------
# stack rule


def xdcr_bidirectional(args, report_violation: Report) -> None:
    """Every XDCR direction declared in a stack has its reverse in the same stack."""
    pairs = {}
    for r in args.resources:
        if r.resource_type == XDCR:
            pairs[(r.props.get("source_name"), r.props.get("target_name"))] = r.urn
    for (src, dst), urn in sorted(pairs.items(), key=lambda kv: str(kv[0])):
        if (dst, src) not in pairs:
            report_violation(f"XDCR_ONE_WAY: {urn} replicates {src} -> {dst} with no {dst} -> {src}", urn)


STACK_RULES = {"xdcr-bidirectional": xdcr_bidirectional}

DESCRIPTIONS = {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in {**RESOURCE_RULES, **STACK_RULES}.items()}
