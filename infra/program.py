"""The whole program: builds the components for the clouds a stack names and returns its outputs.

`__main__.py` calls `build(config.load())` and exports the result; `infra.simulate` calls the same
function under mocks for the tests and `wojak plan`. Stacks talk to each other only through
outputs: a single-cloud stack with `peerStack` reads the peer's `xdcr` output via StackReference.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from infra.access import AwsAccess, AwsAccessArgs, GcpAccess, GcpAccessArgs
from infra.config import StackSettings
from infra.couchbase.aws import AwsCouchbaseCluster, AwsCouchbaseClusterArgs
from infra.couchbase.gcp import GcpCouchbaseCluster, GcpCouchbaseClusterArgs
from infra.couchbase.xdcr import Xdcr, XdcrArgs, XdcrEndpoint
from infra.ecs import EcsCluster, EcsClusterArgs
from infra.fleet.aws import AwsAppFleet, AwsAppFleetArgs
from infra.fleet.gcp import GcpAppFleet, GcpAppFleetArgs
from infra.images import bottlerocket_ami, cos_image
from infra.k8s import K8sWorkload, K8sWorkloadArgs
from infra.network.aws import AwsNetwork, AwsNetworkArgs
from infra.network.gcp import GcpNetwork, GcpNetworkArgs
from infra.secrets import AwsSecrets, AwsSecretsArgs, GcpSecrets, GcpSecretsArgs
from infra.tags import ROLE_APP, ROLE_DATA, ROLE_QUERY
from infra.workload import secret_values

DNS_SUFFIX = "wojak.internal"


class _Built:
    """What one cloud contributes: its XDCR endpoint, connection string and outputs."""

    def __init__(self, endpoint: XdcrEndpoint, connstr: str, nodes: dict, cidr: str):
        self.endpoint, self.connstr, self.nodes, self.cidr = endpoint, connstr, nodes, cidr


def _build_aws(s: StackSettings, peer_cidr: Optional[str]) -> _Built:
    a = s.aws
    assert a is not None
    provider = aws.Provider(f"aws-{a.region}", region=a.region)
    opts = pulumi.ResourceOptions(providers={"aws": provider})
    net = AwsNetwork(
        "aws-net",
        AwsNetworkArgs(s.stack, a.vpc_cidr, a.zones, s.app.http_port, s.access.allowed_cidrs, peer_cidr),
        opts,
    )
    access = AwsAccess("aws-access", AwsAccessArgs(s.stack), opts)
    secrets = AwsSecrets("aws-secrets", AwsSecretsArgs(s.stack, secret_values(s.app, s.couchbase)), opts)
    ecs = EcsCluster("aws-ecs", EcsClusterArgs(s.stack, secrets), opts)
    image = bottlerocket_ami(provider)
    cluster = AwsCouchbaseCluster(
        "aws-cb",
        AwsCouchbaseClusterArgs(
            stack=s.stack,
            settings=a,
            couchbase=s.couchbase,
            image=image,
            vpc_id=net.vpc.id,
            subnet_ids=net.private_subnet_ids,
            security_group_id=net.couchbase_sg.id,
            instance_profile=access.instance_profile.name,
            ecs=ecs,
            secrets=secrets,
            dns_domain=f"aws.{DNS_SUFFIX}",
        ),
        opts,
    )
    fleet = AwsAppFleet(
        "aws-app",
        AwsAppFleetArgs(
            stack=s.stack,
            settings=a,
            app=s.app,
            couchbase=s.couchbase,
            connstr=cluster.connstr,
            image=image,
            subnet_ids=net.private_subnet_ids,
            security_group_id=net.app_sg.id,
            instance_profile=access.instance_profile.name,
            ecs=ecs,
            secrets=secrets,
        ),
        opts,
    )
    nodes = {
        ROLE_DATA: [{"name": name, "id": n.id, "privateIp": n.private_ip} for name, n in zip(cluster.data_node_names, cluster.data_nodes)],
        ROLE_QUERY: {"autoscalingGroup": cluster.query_group.name},
        ROLE_APP: {"autoscalingGroup": fleet.group.name},
    }
    endpoint = XdcrEndpoint("wojak-aws", cluster.admin_endpoint, s.couchbase.admin_username, s.couchbase.password)
    return _Built(endpoint, cluster.connstr, nodes, a.vpc_cidr)


def _build_gcp(s: StackSettings, peer_cidr: Optional[str]) -> _Built:
    g = s.gcp
    assert g is not None
    provider = gcp.Provider("gcp", project=g.project, region=g.region)
    opts = pulumi.ResourceOptions(providers={"gcp": provider})
    net = GcpNetwork(
        "gcp-net",
        GcpNetworkArgs(s.stack, g.project, g.region, g.cidr, s.app.http_port, s.access.allowed_cidrs, peer_cidr),
        opts,
    )
    access = GcpAccess("gcp-access", GcpAccessArgs(s.stack, g.project), opts)
    secrets = GcpSecrets(
        "gcp-secrets",
        GcpSecretsArgs(s.stack, g.project, secret_values(s.app, s.couchbase), access.service_account.email),
        opts,
    )
    image = cos_image(provider, g.project)
    cluster = GcpCouchbaseCluster(
        "gcp-cb",
        GcpCouchbaseClusterArgs(
            stack=s.stack,
            settings=g,
            couchbase=s.couchbase,
            image=image,
            network_id=net.network.id,
            subnetwork_id=net.subnetwork.id,
            service_account=access.service_account.email,
            secret_ids=secrets.ids,
            dns_domain=f"gcp.{DNS_SUFFIX}",
        ),
        opts,
    )
    fleet = GcpAppFleet(
        "gcp-app",
        GcpAppFleetArgs(
            stack=s.stack,
            settings=g,
            app=s.app,
            couchbase=s.couchbase,
            connstr=cluster.connstr,
            image=image,
            subnetwork_id=net.subnetwork.id,
            service_account=access.service_account.email,
            secret_ids=secrets.ids,
        ),
        opts,
    )
    nodes = {
        ROLE_DATA: [{"name": n.name, "zone": n.zone} for n in cluster.data_nodes],
        ROLE_QUERY: {"instanceGroup": cluster.query_group.name},
        ROLE_APP: {"instanceGroup": fleet.group.name},
    }
    endpoint = XdcrEndpoint("wojak-gcp", cluster.admin_endpoint, s.couchbase.admin_username, s.couchbase.password)
    return _Built(endpoint, cluster.connstr, nodes, g.cidr)


def build(s: StackSettings) -> dict[str, Any]:
    """Declare everything for the stack; returns the stack outputs (name -> value/Output)."""
    built: dict[str, _Built] = {}
    if s.aws is not None:
        built["aws"] = _build_aws(s, s.gcp.cidr if s.gcp else s.peer_cidr)
    if s.gcp is not None:
        built["gcp"] = _build_gcp(s, s.aws.vpc_cidr if s.aws else s.peer_cidr)

    if len(built) == 2 and s.xdcr_buckets:
        Xdcr("xdcr", XdcrArgs(built["aws"].endpoint, built["gcp"].endpoint, s.xdcr_buckets))
    elif s.peer_stack and s.xdcr_buckets:
        (mine,) = built.values()
        peer = pulumi.StackReference("peer", stack_name=s.peer_stack)
        xd = peer.get_output("xdcr")
        remote = XdcrEndpoint(
            # static, so resource names stay plain strings: the peer is the other cloud
            name="wojak-gcp" if "aws" in built else "wojak-aws",
            host=xd.apply(lambda v: v["host"]),
            username=xd.apply(lambda v: v["username"]),
            password=peer.get_output("xdcrPassword"),
        )
        Xdcr("xdcr", XdcrArgs(mine.endpoint, remote, s.xdcr_buckets))

    if s.kubernetes.enabled:
        # the pods reach the Couchbase cluster of the cloud their managed cluster runs in
        cloud = "aws" if s.kubernetes.cloud == "eks" else "gcp"
        store_cloud = cloud if cloud in built else next(iter(built))
        K8sWorkload("k8s", K8sWorkloadArgs(s.stack, s.kubernetes, s.app, s.couchbase, built[store_cloud].connstr,
                                           store_cloud))

    outputs: dict[str, Any] = {
        "clouds": list(built),
        "nodes": {c: b.nodes for c, b in built.items()},
        "couchbaseConnstr": {c: b.connstr for c, b in built.items()},
    }
    if len(built) == 1:
        # what a peer stack needs for XDCR (read through StackReference)
        (b,) = built.values()
        outputs["xdcr"] = {"name": b.endpoint.name, "host": b.endpoint.host, "username": b.endpoint.username}
        outputs["xdcrPassword"] = pulumi.Output.secret(b.endpoint.password)
        outputs["networkCidr"] = b.cidr
    return outputs
