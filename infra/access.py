"""On-call access without public SSH, and the node identities that carry it.

AWS: every node gets an instance profile with `AmazonSSMManagedInstanceCore` (Session Manager via
Bottlerocket's control container; `enter-admin-container` for a root shell) and the ECS agent policy.
GCP: every node runs as a dedicated service account, `enable-oslogin=TRUE` is set on every VM (IAM
decides who logs in), and the network module opens 22 only to the IAP forwarding range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from infra.tags import base_aws_tags

SSM_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
ECS_NODE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
OSLOGIN_METADATA = {"enable-oslogin": "TRUE", "block-project-ssh-keys": "TRUE"}


@dataclass
class AwsAccessArgs:
    stack: str


class AwsAccess(pulumi.ComponentResource):
    instance_profile: aws.iam.InstanceProfile
    role: aws.iam.Role

    def __init__(self, name: str, args: AwsAccessArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:access:AwsAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{name}-node-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}
                    ],
                }
            ),
            tags=base_aws_tags(args.stack, f"{name}-node-role"),
            opts=child,
        )
        for label, arn in (("ssm", SSM_POLICY), ("ecs", ECS_NODE_POLICY)):
            aws.iam.RolePolicyAttachment(f"{name}-node-{label}", role=self.role.name, policy_arn=arn, opts=child)
        self.instance_profile = aws.iam.InstanceProfile(
            f"{name}-node-profile", role=self.role.name, tags=base_aws_tags(args.stack, f"{name}-node-profile"), opts=child
        )
        self.register_outputs({"instanceProfile": self.instance_profile.name})


@dataclass
class GcpAccessArgs:
    stack: str
    project: str


class GcpAccess(pulumi.ComponentResource):
    service_account: gcp.serviceaccount.Account

    def __init__(self, name: str, args: GcpAccessArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:access:GcpAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.service_account = gcp.serviceaccount.Account(
            f"{name}-node-sa",
            project=args.project,
            account_id=f"wojak-{args.stack}-node"[:30],
            display_name="Wojak nodes (Couchbase and app)",
            opts=child,
        )
        # least privilege for the nodes: write logs and metrics; secrets are granted per secret
        for role in ("roles/logging.logWriter", "roles/monitoring.metricWriter"):
            gcp.projects.IAMMember(
                f"{name}-node-{role.split('/')[-1]}",
                project=args.project,
                role=role,
                member=self.service_account.email.apply(lambda e: f"serviceAccount:{e}"),
                opts=child,
            )
        self.register_outputs({"serviceAccount": self.service_account.email})
