"""AppFleet on AWS: a spot ASG of Bottlerocket (ECS variant) nodes running the app task.

One ECS task per node (DAEMON service): the engine plus the configured sidecars, sharing a task
volume at /run/wojak for the ipc:// socket. The engine's config file is written by a short-lived
`config` container into a second shared volume, because ECS has no file injection; the same step
(as root, the only container that is) hands the socket's and the engine's data volumes to the
image's user. The data volume is a directory of the node: kept across restarts of the task. Secrets
reach the containers as env vars from Secrets Manager (`secrets`), never as plain `environment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from infra.config import AppSettings, AwsSettings, CouchbaseSettings
from infra.ecs import Container, EcsCluster, container_definitions
from infra.images import OsImage, bottlerocket_user_data
from infra.secrets import AwsSecrets
from infra.spot import AwsSpotGroupArgs, aws_spot_group
from infra.tags import ROLE_APP, aws_tags, base_aws_tags
from infra.workload import APP_UID, DATA_DIR, ENGINE_CONFIG_PATH, RUN_DIR, containers, engine_toml


@dataclass
class AwsAppFleetArgs:
    stack: str
    settings: AwsSettings
    app: AppSettings
    couchbase: CouchbaseSettings
    connstr: str
    image: OsImage
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    instance_profile: pulumi.Input[str]
    ecs: EcsCluster
    secrets: AwsSecrets


class AwsAppFleet(pulumi.ComponentResource):
    def __init__(self, name: str, args: AwsAppFleetArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:app:AwsFleet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        a = args
        self.group = aws_spot_group(
            name,
            AwsSpotGroupArgs(
                image=a.image,
                instance_types=a.settings.app_instance_types,
                count=a.settings.app_node_count,
                subnet_ids=a.subnet_ids,
                security_group_ids=[a.security_group_id],
                instance_profile=a.instance_profile,
                user_data=a.ecs.cluster.name.apply(
                    lambda c: bottlerocket_user_data(c, {"wojak.role": ROLE_APP}, spot=True)
                ),
                tags=aws_tags(a.stack, ROLE_APP, name, os="bottlerocket"),
            ),
            parent=self,
        )
        defs = [
            Container(
                name="config",
                image=a.app.image_ref,
                entry_point=["/bin/sh", "-c"],
                command=['printf "%s" "$WOJAK_CONFIG_TOML" > ' + ENGINE_CONFIG_PATH
                         + f" && chown {APP_UID}:{APP_UID} {RUN_DIR} {DATA_DIR}"],
                env={"WOJAK_CONFIG_TOML": engine_toml(a.app, "aws")},
                essential=False,
                memory_reservation=16,
                mounts=[("wojak-etc", "/etc/wojak"), ("wojak-run", RUN_DIR), ("wojak-data", DATA_DIR)],
                user="0",
            )
        ]
        for spec in containers(a.app, a.couchbase, a.connstr):
            defs.append(
                Container(
                    name=spec.name,
                    image=a.app.image_ref,
                    command=list(spec.args),  # the image's entrypoint is `wojak`
                    env=dict(spec.env),
                    secrets={k: k for k in spec.secret_env},
                    mounts=[("wojak-run", RUN_DIR), ("wojak-etc", "/etc/wojak")]
                    + ([("wojak-data", DATA_DIR)] if spec.name == "engine" else []),
                    depends_on=[("config", "SUCCESS")] + ([("engine", "START")] if spec.name != "engine" else []),
                    stop_timeout=25,
                )
            )
        td = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=f"wojak-{a.stack}-app",
            network_mode="host",
            requires_compatibilities=["EC2"],
            execution_role_arn=a.ecs.execution_role.arn,
            container_definitions=container_definitions(defs, a.secrets),
            volumes=[
                aws.ecs.TaskDefinitionVolumeArgs(name="wojak-run"),  # task-scoped, shared by the containers
                aws.ecs.TaskDefinitionVolumeArgs(name="wojak-etc"),
                aws.ecs.TaskDefinitionVolumeArgs(name="wojak-data", host_path="/local/wojak/data"),
            ],
            tags=base_aws_tags(a.stack, f"{name}-task"),
            opts=child,
        )
        aws.ecs.Service(
            f"{name}-svc",
            cluster=a.ecs.cluster.arn,
            task_definition=td.arn,
            scheduling_strategy="DAEMON",
            launch_type="EC2",
            placement_constraints=[
                aws.ecs.ServicePlacementConstraintArgs(type="memberOf", expression=f"attribute:wojak.role == {ROLE_APP}")
            ],
            tags=base_aws_tags(a.stack, f"{name}-svc"),
            opts=child,
        )
        self.register_outputs({"group": self.group.name})
