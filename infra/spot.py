"""Spot capacity groups, one helper per cloud, shared by Couchbase query nodes and the app fleet.

AWS: a launch template without market options plus an ASG whose mixed-instances policy puts 100 %
of capacity on spot across several instance types with the capacity-optimized allocation strategy
(fewest interruptions) and capacity rebalancing. GCP: an instance template with the SPOT
provisioning model and a regional managed instance group across the configured zones.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from infra.access import OSLOGIN_METADATA
from infra.images import OsImage


@dataclass
class AwsSpotGroupArgs:
    image: OsImage
    instance_types: Sequence[str]
    count: int
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_ids: Sequence[pulumi.Input[str]]
    instance_profile: pulumi.Input[str]
    user_data: pulumi.Input[str]
    tags: Mapping[str, str]


def aws_spot_group(name: str, a: AwsSpotGroupArgs, parent: pulumi.Resource) -> aws.autoscaling.Group:
    child = pulumi.ResourceOptions(parent=parent)
    tags = {**a.tags, "wojak:os": "bottlerocket"}
    lt = aws.ec2.LaunchTemplate(
        f"{name}-lt",
        image_id=a.image.id,
        # no instance_market_options here: with a mixed-instances policy the ASG decides spot
        user_data=pulumi.Output.from_input(a.user_data).apply(lambda u: base64.b64encode(u.encode()).decode()),
        iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(name=a.instance_profile),
        vpc_security_group_ids=list(a.security_group_ids),
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_tokens="required", http_put_response_hop_limit=2, http_endpoint="enabled"
        ),
        tag_specifications=[
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=rt, tags=tags) for rt in ("instance", "volume")
        ],
        tags=tags,
        opts=child,
    )
    return aws.autoscaling.Group(
        f"{name}-asg",
        vpc_zone_identifiers=list(a.subnet_ids),
        min_size=a.count,
        max_size=max(a.count * 2, 1),
        desired_capacity=a.count,
        capacity_rebalance=True,  # replace at the rebalance recommendation, before the 2-min notice
        mixed_instances_policy=aws.autoscaling.GroupMixedInstancesPolicyArgs(
            instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
                on_demand_base_capacity=0,
                on_demand_percentage_above_base_capacity=0,
                spot_allocation_strategy="capacity-optimized",
            ),
            launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
                launch_template_specification=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                    launch_template_id=lt.id, version=lt.latest_version.apply(str)
                ),
                overrides=[
                    aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=t)
                    for t in a.instance_types
                ],
            ),
        ),
        tags=[
            aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True) for k, v in sorted(tags.items())
        ],
        opts=child,
    )


@dataclass
class GcpSpotGroupArgs:
    project: str
    region: str
    zones: Sequence[str]
    image: OsImage
    machine_type: str
    count: int
    subnetwork: pulumi.Input[str]
    network_tags: Sequence[str]
    service_account: pulumi.Input[str]
    user_data: str
    labels: Mapping[str, str]
    shutdown_script: str = ""


def gcp_spot_group(name: str, a: GcpSpotGroupArgs, parent: pulumi.Resource) -> gcp.compute.RegionInstanceGroupManager:
    child = pulumi.ResourceOptions(parent=parent)
    metadata = {"user-data": a.user_data, **OSLOGIN_METADATA}
    if a.shutdown_script:
        metadata["shutdown-script"] = a.shutdown_script
    tpl = gcp.compute.InstanceTemplate(
        f"{name}-tpl",
        project=a.project,
        machine_type=a.machine_type,
        disks=[gcp.compute.InstanceTemplateDiskArgs(source_image=a.image.id, boot=True, auto_delete=True, disk_size_gb=20)],
        network_interfaces=[gcp.compute.InstanceTemplateNetworkInterfaceArgs(subnetwork=a.subnetwork)],
        scheduling=gcp.compute.InstanceTemplateSchedulingArgs(
            provisioning_model="SPOT",
            preemptible=True,
            automatic_restart=False,
            on_host_maintenance="TERMINATE",
            instance_termination_action="DELETE",  # the MIG recreates it when capacity returns
        ),
        service_account=gcp.compute.InstanceTemplateServiceAccountArgs(
            email=a.service_account, scopes=["cloud-platform"]
        ),
        shielded_instance_config=gcp.compute.InstanceTemplateShieldedInstanceConfigArgs(enable_secure_boot=True),
        metadata=metadata,
        labels=dict(a.labels),
        tags=list(a.network_tags),
        opts=child,
    )
    return gcp.compute.RegionInstanceGroupManager(
        f"{name}-mig",
        project=a.project,
        region=a.region,
        base_instance_name=name,
        distribution_policy_zones=list(a.zones),
        versions=[gcp.compute.RegionInstanceGroupManagerVersionArgs(instance_template=tpl.self_link_unique)],
        target_size=a.count,
        opts=child,
    )
