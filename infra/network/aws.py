"""AWS network: a VPC with one private subnet per zone, NAT egress, and the security groups.

Nodes have no public IPs. The only ingress from outside the VPC: the HTTP sidecar's port from
`access.allowedCidrs`, and Couchbase XDCR ports from the peer cloud's private range (reached over
the private interconnect). No rule opens port 22: on-call access is SSM (see infra/access.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra.couchbase import CLIENT_PORTS, CLUSTER_PORTS, XDCR_PORTS
from infra.network import split
from infra.tags import base_aws_tags


@dataclass
class AwsNetworkArgs:
    stack: str
    cidr: str
    zones: Sequence[str]
    app_port: int
    allowed_cidrs: Sequence[str]
    peer_cidr: Optional[str] = None  # the other cloud's private range, for XDCR


class AwsNetwork(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    private_subnet_ids: list[pulumi.Output]
    couchbase_sg: aws.ec2.SecurityGroup
    app_sg: aws.ec2.SecurityGroup

    def __init__(self, name: str, args: AwsNetworkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:network:AwsNetwork", name, None, opts)
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_hostnames=True,  # private zone records and SSM endpoints need DNS
            enable_dns_support=True,
            tags=base_aws_tags(args.stack, f"{name}-vpc"),
            opts=child,
        )
        self._create_subnets(child)
        self._create_security_groups(child)
        self.register_outputs({"vpcId": self.vpc.id, "privateSubnetIds": self.private_subnet_ids})

    def _create_subnets(self, child: pulumi.ResourceOptions) -> None:
        a, name = self._args, self._name
        # one private subnet per zone, plus one small public subnet holding the NAT gateway
        cidrs = split(a.cidr, len(a.zones) + 1)
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=base_aws_tags(a.stack, f"{name}-igw"), opts=child
        )
        public = aws.ec2.Subnet(
            f"{name}-public",
            vpc_id=self.vpc.id,
            cidr_block=cidrs[-1],
            availability_zone=a.zones[0],
            map_public_ip_on_launch=False,  # only the NAT gateway's EIP is public
            tags=base_aws_tags(a.stack, f"{name}-public"),
            opts=child,
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=base_aws_tags(a.stack, f"{name}-public-rt"),
            opts=child,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public-rta", subnet_id=public.id, route_table_id=public_rt.id, opts=child
        )
        eip = aws.ec2.Eip(f"{name}-nat-eip", domain="vpc", tags=base_aws_tags(a.stack, f"{name}-nat-eip"), opts=child)
        nat = aws.ec2.NatGateway(
            f"{name}-nat",
            subnet_id=public.id,
            allocation_id=eip.id,
            tags=base_aws_tags(a.stack, f"{name}-nat"),
            opts=child,
        )
        private_rt = aws.ec2.RouteTable(
            f"{name}-private-rt",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
            tags=base_aws_tags(a.stack, f"{name}-private-rt"),
            opts=child,
        )
        self.private_subnet_ids = []
        for zone, cidr in zip(a.zones, cidrs):
            subnet = aws.ec2.Subnet(
                f"{name}-private-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags=base_aws_tags(a.stack, f"{name}-private-{zone}"),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-rta-{zone}", subnet_id=subnet.id, route_table_id=private_rt.id, opts=child
            )
            self.private_subnet_ids.append(subnet.id)

    def _create_security_groups(self, child: pulumi.ResourceOptions) -> None:
        a, name = self._args, self._name
        self.couchbase_sg = aws.ec2.SecurityGroup(
            f"{name}-couchbase-sg",
            vpc_id=self.vpc.id,
            description="Couchbase nodes: cluster members, app nodes and the peer cluster only",
            tags=base_aws_tags(a.stack, f"{name}-couchbase-sg"),
            opts=child,
        )
        self.app_sg = aws.ec2.SecurityGroup(
            f"{name}-app-sg",
            vpc_id=self.vpc.id,
            description="App nodes: HTTP sidecar from allowed CIDRs; no SSH (SSM instead)",
            tags=base_aws_tags(a.stack, f"{name}-app-sg"),
            opts=child,
        )
        for sg, label in ((self.couchbase_sg, "couchbase"), (self.app_sg, "app")):
            # egress: image pulls, SSM, cloud APIs through the NAT gateway
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-{label}-egress",
                security_group_id=sg.id,
                ip_protocol="-1",
                cidr_ipv4="0.0.0.0/0",
                description="all egress",
                opts=child,
            )
        for lo, hi in CLUSTER_PORTS:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-cb-members-{lo}-{hi}",
                security_group_id=self.couchbase_sg.id,
                referenced_security_group_id=self.couchbase_sg.id,
                ip_protocol="tcp",
                from_port=lo,
                to_port=hi,
                description="Couchbase intra-cluster",
                opts=child,
            )
        for lo, hi in CLIENT_PORTS:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-cb-from-app-{lo}-{hi}",
                security_group_id=self.couchbase_sg.id,
                referenced_security_group_id=self.app_sg.id,
                ip_protocol="tcp",
                from_port=lo,
                to_port=hi,
                description="Couchbase SDK from app nodes",
                opts=child,
            )
        if a.peer_cidr:
            for lo, hi in XDCR_PORTS:
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-cb-xdcr-{lo}-{hi}",
                    security_group_id=self.couchbase_sg.id,
                    cidr_ipv4=a.peer_cidr,
                    ip_protocol="tcp",
                    from_port=lo,
                    to_port=hi,
                    description="XDCR from the peer cloud's cluster (private interconnect)",
                    opts=child,
                )
        for i, cidr in enumerate(a.allowed_cidrs):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-app-http-{i}",
                security_group_id=self.app_sg.id,
                cidr_ipv4=cidr,
                ip_protocol="tcp",
                from_port=a.app_port,
                to_port=a.app_port,
                description="HTTP sidecar from an allowed CIDR",
                opts=child,
            )
