"""Container-optimized OS images and their boot-time configuration.

AWS: Bottlerocket, ECS variant (`aws-ecs-2`), looked up by AWS's owner and name filter at deploy
time - never a hard-coded AMI ID. GCP: Container-Optimized OS, family `cos-stable` in `cos-cloud`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

BOTTLEROCKET_OWNER = "amazon"
BOTTLEROCKET_NAME = "bottlerocket-aws-ecs-2-x86_64-*"
COS_PROJECT = "cos-cloud"
COS_FAMILY = "cos-stable"


@dataclass(frozen=True)
class OsImage:
    id: pulumi.Output
    name: pulumi.Output


def bottlerocket_ami(provider: pulumi.ProviderResource) -> OsImage:
    ami = aws.ec2.get_ami_output(
        owners=[BOTTLEROCKET_OWNER],
        most_recent=True,
        filters=[
            aws.ec2.GetAmiFilterArgs(name="name", values=[BOTTLEROCKET_NAME]),
            aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
        ],
        opts=pulumi.InvokeOutputOptions(provider=provider),
    )
    return OsImage(id=ami.id, name=ami.name)


def cos_image(provider: pulumi.ProviderResource, project: str) -> OsImage:
    # resolved once per deploy, so a new COS release replaces VMs only on the next `pulumi up`
    img = gcp.compute.get_image_output(
        family=COS_FAMILY, project=COS_PROJECT, opts=pulumi.InvokeOutputOptions(provider=provider)
    )
    return OsImage(id=img.self_link, name=img.name)


def bottlerocket_user_data(cluster_name: str, attributes: Mapping[str, str], spot: bool) -> str:
    """Bottlerocket settings (TOML): join the ECS cluster, tag the node, enable on-call containers."""
    lines = [
        "[settings.ecs]",
        f'cluster = "{cluster_name}"',
        # ECS moves the instance to DRAINING on the 2-minute spot notice and SIGTERMs its tasks,
        # which is what lets a query node leave the Couchbase cluster cleanly
        f"enable-spot-instance-draining = {'true' if spot else 'false'}",
        'container-stop-timeout = "110s"',
        "",
        "[settings.ecs.instance-attributes]",
    ]
    lines += [f'"{k}" = "{v}"' for k, v in sorted(attributes.items())]
    lines += [
        "",
        "# SSM agent runs in the control container; the admin container gives on-call a root shell",
        "[settings.host-containers.control]",
        "enabled = true",
        "[settings.host-containers.admin]",
        "enabled = true",
        "",
        "[settings.kernel.sysctl]",
        '"vm.max_map_count" = "262144"',
        "",
    ]
    return "\n".join(lines)


def cos_cloud_config(files: Sequence[tuple[str, str]], commands: Sequence[str]) -> str:
    """A `#cloud-config` for COS: files (path, content) then commands, run on every boot.

    COS keeps /etc in a tmpfs and most filesystems noexec, so scripts go to /var/lib/wojak and run
    through `/bin/bash`, and cloud-init rewrites them at each boot.
    """
    out = ["#cloud-config", "write_files:"]
    for path, content in files:
        out.append(f"- path: {path}")
        out.append("  permissions: '0600'")
        out.append("  content: |")
        out += [f"    {line}" for line in content.splitlines()]
    out.append("runcmd:")
    out += [f"- {json.dumps(cmd)}" for cmd in commands]  # JSON strings are valid YAML scalars
    return "\n".join(out) + "\n"
