"""The ECS control plane the Bottlerocket (ECS variant) nodes join, and container definitions.

Bottlerocket runs workloads only through an orchestrator; ECS is the lightest one that keeps our
own VMs (data nodes with their volumes, spot ASGs) and gives spot draining and secret injection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra.secrets import AwsSecrets
from infra.tags import base_aws_tags


@dataclass
class EcsClusterArgs:
    stack: str
    secrets: AwsSecrets


class EcsCluster(pulumi.ComponentResource):
    cluster: aws.ecs.Cluster
    execution_role: aws.iam.Role

    def __init__(self, name: str, args: EcsClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:ecs:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=f"wojak-{args.stack}",
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            tags=base_aws_tags(args.stack, f"{name}-cluster"),
            opts=child,
        )
        self.execution_role = aws.iam.Role(
            f"{name}-exec-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        }
                    ],
                }
            ),
            tags=base_aws_tags(args.stack, f"{name}-exec-role"),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-exec-base",
            role=self.execution_role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
            opts=child,
        )
        # tasks may read exactly one secret: ours
        aws.iam.RolePolicy(
            f"{name}-exec-secret",
            role=self.execution_role.id,
            policy=args.secrets.secret.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arn}],
                    }
                )
            ),
            opts=child,
        )
        self.register_outputs({"clusterName": self.cluster.name})


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: Sequence[str] = ()
    entry_point: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)  # env name -> key in the JSON secret
    essential: bool = True
    memory_reservation: int = 256
    mounts: Sequence[tuple[str, str]] = ()  # (volume, containerPath)
    depends_on: Sequence[tuple[str, str]] = ()  # (container, condition)
    stop_timeout: int = 30
    user: str = ""  # "" = the image's (uid 10001); "0" only for the config step that owns the volumes


def container_definitions(containers: Sequence[Container], secrets: AwsSecrets) -> pulumi.Output:
    """ECS container definitions as the JSON string the API takes; secrets by reference only."""

    def one(c: Container, arn: str) -> dict:
        d: dict = {
            "name": c.name,
            "image": c.image,
            "essential": c.essential,
            "memoryReservation": c.memory_reservation,
            "stopTimeout": c.stop_timeout,
            "environment": [{"name": k, "value": v} for k, v in sorted(c.env.items())],
            "secrets": [{"name": k, "valueFrom": f"{arn}:{v}::"} for k, v in sorted(c.secrets.items())],
            "mountPoints": [{"sourceVolume": v, "containerPath": p} for v, p in c.mounts],
            "ulimits": [{"name": "nofile", "softLimit": 200000, "hardLimit": 200000}],
            "logConfiguration": {"logDriver": "json-file"},
        }
        if c.command:
            d["command"] = list(c.command)
        if c.entry_point:
            d["entryPoint"] = list(c.entry_point)
        if c.user:
            d["user"] = c.user
        if c.depends_on:
            d["dependsOn"] = [{"containerName": n, "condition": cond} for n, cond in c.depends_on]
        return d

    return secrets.secret.arn.apply(lambda arn: json.dumps([one(c, arn) for c in containers]))
