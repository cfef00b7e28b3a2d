"""On-call shell access to a node named by role, without public SSH.

AWS: `aws ssm start-session --target i-...` (Bottlerocket's control container runs the SSM agent;
then `enter-admin-container` for a root shell). GCP: `gcloud compute ssh NAME --tunnel-through-iap`
(OS Login decides who may log in; the firewall opens 22 only to the IAP range).

    python -m infra.ops.oncall aws --stack aws --role couchbase-data --region ap-south-1
    python -m infra.ops.oncall gcp --instance gcp-cb-data-0 --zone asia-south1-a --project P --exec
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from infra.tags import ROLES


@dataclass(frozen=True)
class Node:
    cloud: str  # aws | gcp
    name: str  # instance id (aws) or instance name (gcp)
    role: str
    zone: str = ""
    region: str = ""
    project: str = ""


def ssm_argv(instance_id: str, region: str) -> list[str]:
    if not instance_id.startswith("i-"):
        raise ValueError(f"not an EC2 instance id: {instance_id!r}")
    argv = ["aws", "ssm", "start-session", "--target", instance_id]
    return argv + (["--region", region] if region else [])


def iap_argv(instance: str, zone: str, project: str) -> list[str]:
    if not instance or not zone:
        raise ValueError("instance and zone are required")
    argv = ["gcloud", "compute", "ssh", instance, "--zone", zone, "--tunnel-through-iap"]
    return argv + (["--project", project] if project else [])


def argv_for(node: Node) -> list[str]:
    """The command that opens a shell on `node`."""
    if node.cloud == "aws":
        return ssm_argv(node.name, node.region)
    if node.cloud == "gcp":
        return iap_argv(node.name, node.zone, node.project)
    raise ValueError(f"unknown cloud {node.cloud!r}")


def aws_nodes(ec2: Any, stack: str, role: str, region: str = "") -> list[Node]:
    """Running nodes of a stack and role, by their wojak tags."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    out = []
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag:wojak:stack", "Values": [stack]},
            {"Name": "tag:wojak:role", "Values": [role]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    ):
        for res in page.get("Reservations", []):
            for inst in res.get("Instances", []):
                out.append(
                    Node("aws", inst["InstanceId"], role, inst.get("Placement", {}).get("AvailabilityZone", ""), region)
                )
    return sorted(out, key=lambda n: n.name)


def main(argv: Optional[Sequence[str]] = None, ec2: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="oncall", description="shell on a node by role, no public SSH")
    sub = parser.add_subparsers(dest="cloud", required=True)
    a = sub.add_parser("aws")
    a.add_argument("--stack", required=True)
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--index", type=int, default=0)
    a.add_argument("--region", default="")
    a.add_argument("--endpoint-url", default=None)
    g = sub.add_parser("gcp")
    g.add_argument("--instance", required=True)
    g.add_argument("--zone", required=True)
    g.add_argument("--project", default="")
    for p in (a, g):
        p.add_argument("--exec", action="store_true", help="run the command instead of printing it")
    args = parser.parse_args(argv)

    if args.cloud == "aws":
        if ec2 is None:
            import boto3

            ec2 = boto3.client("ec2", region_name=args.region or None, endpoint_url=args.endpoint_url)
        nodes = aws_nodes(ec2, args.stack, args.role, args.region)
        if not nodes:
            print(f"no running {args.role} node in stack {args.stack}", file=sys.stderr)
            return 1
        if not 0 <= args.index < len(nodes):
            print(f"--index must be below {len(nodes)}", file=sys.stderr)
            return 2
        command = argv_for(nodes[args.index])
    else:
        command = argv_for(Node("gcp", args.instance, "", zone=args.zone, project=args.project))

    if args.exec:
        os.execvp(command[0], command)  # replaces this process: the session owns the terminal
    print(" ".join(command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
