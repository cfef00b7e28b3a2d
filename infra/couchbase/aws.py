"""CouchbaseCluster on AWS: on-demand data nodes with EBS volumes, spot query/index nodes, DNS.

Data nodes are plain EC2 instances (never spot; `wojak:reserved` records that they are meant to be
covered by reservations), one per zone in turn, each zone a Couchbase server group. Query/index
nodes are a spot ASG. Couchbase itself and the bootstrap run as ECS daemon tasks on Bottlerocket,
placed by the node's `wojak.role` ECS attribute. A Route 53 private zone names the data nodes and
publishes an SRV record so clients bootstrap with `couchbase://cb.<zone>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra.config import AwsSettings, CouchbaseSettings
from infra.couchbase import ADMIN_PORT
from infra.couchbase.bootstrap import BootstrapArgs, script
from infra.ecs import Container, EcsCluster, container_definitions
from infra.images import OsImage, bottlerocket_user_data
from infra.secrets import AwsSecrets
from infra.spot import AwsSpotGroupArgs, aws_spot_group
from infra.tags import ROLE_DATA, ROLE_QUERY, aws_tags, base_aws_tags

DATA_VOLUME_DEVICE = "/dev/xvdb"  # Bottlerocket's data volume, mounted at /local


@dataclass
class AwsCouchbaseClusterArgs:
    stack: str
    settings: AwsSettings
    couchbase: CouchbaseSettings
    image: OsImage
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    instance_profile: pulumi.Input[str]
    ecs: EcsCluster
    secrets: AwsSecrets
    dns_domain: str  # e.g. aws.wojak.internal


class AwsCouchbaseCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: AwsCouchbaseClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:couchbase:AwsCluster", name, None, opts)
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        self.zone = aws.route53.Zone(
            f"{name}-dns",
            name=args.dns_domain,
            vpcs=[aws.route53.ZoneVpcArgs(vpc_id=args.vpc_id)],
            comment="Wojak service discovery (private)",
            tags=base_aws_tags(args.stack, f"{name}-dns"),
            opts=child,
        )
        self.seed_host = f"cb-data-0.{args.dns_domain}"
        self.srv_name = f"cb.{args.dns_domain}"
        self.connstr = f"couchbase://{self.srv_name}"
        self.data_nodes = self._create_data_nodes(child)
        self.query_group = self._create_query_nodes(child)
        self._create_tasks(child)
        self.admin_endpoint = f"{self.seed_host}:{ADMIN_PORT}"
        self.register_outputs(
            {
                "dataNodes": [i.private_ip for i in self.data_nodes],
                "queryGroup": self.query_group.name,
                "connstr": self.connstr,
            }
        )

    def _user_data(self, role: str, spot: bool) -> pulumi.Output:
        return self._args.ecs.cluster.name.apply(
            lambda cluster: bottlerocket_user_data(cluster, {"wojak.role": role}, spot=spot)
        )

    def _create_data_nodes(self, child: pulumi.ResourceOptions) -> list[aws.ec2.Instance]:
        a, s, name = self._args, self._args.settings, self._name
        nodes, records = [], []
        self.data_node_names = []
        for i in range(s.data_node_count):
            zone_index = i % len(s.zones)
            node_name = f"{name}-data-{i}"
            tags = aws_tags(
                a.stack,
                ROLE_DATA,
                node_name,
                reserved=str(s.reserved).lower(),
                zone=s.zones[zone_index],
                os="bottlerocket",
            )
            node = aws.ec2.Instance(
                node_name,
                ami=a.image.id,
                instance_type=s.data_instance_type,
                subnet_id=a.subnet_ids[zone_index],
                vpc_security_group_ids=[a.security_group_id],
                iam_instance_profile=a.instance_profile,
                user_data=self._user_data(ROLE_DATA, spot=False),
                # no instance_market_options: on-demand, so reservations apply and AWS never reclaims it
                metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                    http_tokens="required", http_put_response_hop_limit=2, http_endpoint="enabled"
                ),
                root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(volume_size=4, volume_type="gp3", encrypted=True),
                ebs_block_devices=[
                    aws.ec2.InstanceEbsBlockDeviceArgs(
                        device_name=DATA_VOLUME_DEVICE,
                        volume_type="gp3",
                        volume_size=s.data_volume_gb,
                        iops=6000,
                        throughput=250,
                        encrypted=True,
                        # the data outlives an instance replacement; an operator decides its fate
                        delete_on_termination=False,
                        tags={**tags, "Name": f"{node_name}-data"},
                    )
                ],
                disable_api_termination=True,
                tags=tags,
                opts=child,
            )
            aws.route53.Record(
                f"{node_name}-a",
                zone_id=self.zone.zone_id,
                name=f"cb-data-{i}.{a.dns_domain}",
                type="A",
                ttl=60,
                records=[node.private_ip],
                opts=child,
            )
            self.data_node_names.append(node_name)
            records.append(f"0 0 11210 cb-data-{i}.{a.dns_domain}")
            nodes.append(node)
        aws.route53.Record(
            f"{name}-srv",
            zone_id=self.zone.zone_id,
            name=f"_couchbase._tcp.{self.srv_name}",
            type="SRV",
            ttl=60,
            records=records,
            opts=child,
        )
        return nodes

    def _create_query_nodes(self, child: pulumi.ResourceOptions) -> aws.autoscaling.Group:
        a, s, name = self._args, self._args.settings, self._name
        user_data = self._user_data(ROLE_QUERY, spot=True)
        return aws_spot_group(
            f"{name}-query",
            AwsSpotGroupArgs(
                image=a.image,
                instance_types=s.query_instance_types,
                count=s.query_node_count,
                subnet_ids=a.subnet_ids,
                security_group_ids=[a.security_group_id],
                instance_profile=a.instance_profile,
                user_data=user_data,
                tags=aws_tags(a.stack, ROLE_QUERY, f"{name}-query", os="bottlerocket"),
            ),
            parent=self,
        )

    def _create_tasks(self, child: pulumi.ResourceOptions) -> None:
        a, name = self._args, self._name
        cb = a.couchbase
        for role in (ROLE_DATA, ROLE_QUERY):
            short = role.split("-")[1]
            boot = script(BootstrapArgs("aws", role, self.seed_host, f"wojak-{a.stack}-aws", cb))
            containers = [
                Container(
                    name="couchbase",
                    image=cb.image_ref,
                    memory_reservation=1024,
                    mounts=[("couchbase-var", "/opt/couchbase/var")],
                    stop_timeout=120,
                ),
                Container(
                    name="bootstrap",
                    image=cb.image_ref,
                    entry_point=["/bin/sh", "-c"],
                    command=[boot],
                    env={"CB_USERNAME": cb.admin_username},
                    secrets={"CB_PASSWORD": "WOJAK_COUCHBASE_PASSWORD"},
                    # data nodes: run once; query nodes: keep running to leave on SIGTERM
                    essential=role == ROLE_QUERY,
                    depends_on=[("couchbase", "START")],
                    stop_timeout=110,
                ),
            ]
            td = aws.ecs.TaskDefinition(
                f"{name}-{short}-task",
                family=f"wojak-{a.stack}-couchbase-{short}",
                network_mode="host",  # Couchbase advertises the node's own address
                requires_compatibilities=["EC2"],
                execution_role_arn=a.ecs.execution_role.arn,
                container_definitions=container_definitions(containers, a.secrets),
                volumes=[
                    aws.ecs.TaskDefinitionVolumeArgs(
                        name="couchbase-var",
                        # on data nodes /local is the EBS data volume
                        host_path="/local/couchbase",
                    )
                ],
                tags=base_aws_tags(a.stack, f"{name}-{short}-task"),
                opts=child,
            )
            aws.ecs.Service(
                f"{name}-{short}-svc",
                cluster=a.ecs.cluster.arn,
                task_definition=td.arn,
                scheduling_strategy="DAEMON",  # exactly one Couchbase per node of the role
                launch_type="EC2",
                placement_constraints=[
                    aws.ecs.ServicePlacementConstraintArgs(
                        type="memberOf", expression=f"attribute:wojak.role == {role}"
                    )
                ],
                tags=base_aws_tags(a.stack, f"{name}-{short}-svc"),
                opts=child,
            )
