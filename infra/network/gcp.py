"""GCP network: a custom-mode VPC with one regional subnetwork, Cloud NAT egress, and firewalls.

Firewalls target network tags (`couchbase`, `app`). Port 22 is open only from Google's IAP TCP
forwarding range, so on-call reaches nodes with `gcloud compute ssh --tunnel-through-iap` and OS
Login, never from the internet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_gcp as gcp

from infra.couchbase import CLIENT_PORTS, CLUSTER_PORTS, XDCR_PORTS

IAP_RANGE = "35.235.240.0/20"  # Google's documented source range for IAP TCP forwarding
TAG_COUCHBASE = "couchbase"
TAG_APP = "app"


def _ports(ranges) -> list[str]:
    return [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges]


@dataclass
class GcpNetworkArgs:
    stack: str
    project: str
    region: str
    cidr: str
    app_port: int
    allowed_cidrs: Sequence[str]
    peer_cidr: Optional[str] = None


class GcpNetwork(pulumi.ComponentResource):
    network: gcp.compute.Network
    subnetwork: gcp.compute.Subnetwork

    def __init__(self, name: str, args: GcpNetworkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:network:GcpNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.network = gcp.compute.Network(
            f"{name}-vpc", project=args.project, auto_create_subnetworks=False, opts=child
        )
        # GCP subnetworks are regional and span every zone of the region
        self.subnetwork = gcp.compute.Subnetwork(
            f"{name}-subnet",
            project=args.project,
            region=args.region,
            network=self.network.id,
            ip_cidr_range=args.cidr,
            private_ip_google_access=True,  # Secret Manager and Artifact Registry without public IPs
            opts=child,
        )
        router = gcp.compute.Router(
            f"{name}-router", project=args.project, region=args.region, network=self.network.id, opts=child
        )
        gcp.compute.RouterNat(
            f"{name}-nat",
            project=args.project,
            region=args.region,
            router=router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            opts=child,
        )
        self._firewalls(name, args, child)
        self.register_outputs({"networkId": self.network.id, "subnetworkId": self.subnetwork.id})

    def _firewalls(self, name: str, a: GcpNetworkArgs, child: pulumi.ResourceOptions) -> None:
        def rule(suffix: str, ports: list[str], **kw) -> None:
            gcp.compute.Firewall(
                f"{name}-{suffix}",
                project=a.project,
                network=self.network.id,
                direction="INGRESS",
                allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=ports)],
                opts=child,
                **kw,
            )

        rule("cb-members", _ports(CLUSTER_PORTS), source_tags=[TAG_COUCHBASE], target_tags=[TAG_COUCHBASE])
        rule("cb-from-app", _ports(CLIENT_PORTS), source_tags=[TAG_APP], target_tags=[TAG_COUCHBASE])
        if a.peer_cidr:
            rule("cb-xdcr", _ports(XDCR_PORTS), source_ranges=[a.peer_cidr], target_tags=[TAG_COUCHBASE])
        if a.allowed_cidrs:
            rule("app-http", [str(a.app_port)], source_ranges=list(a.allowed_cidrs), target_tags=[TAG_APP])
        rule("iap-ssh", ["22"], source_ranges=[IAP_RANGE], target_tags=[TAG_COUCHBASE, TAG_APP])
