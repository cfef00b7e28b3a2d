"""Fault injection: terminate spot nodes of one stack and role, to prove the platform heals.

Guarded on purpose: a stack and a role must both be named (no wildcards), the default is a dry
run that only lists what would go, `--yes` is needed to terminate, and only instances that are
spot *both* by EC2's own `InstanceLifecycle` and by the `wojak:lifecycle` tag are ever touched -
so a data node can never be hit, whatever its tags say.

    python -m infra.ops.fault_inject --stack aws --role app --count 1            # dry run
    python -m infra.ops.fault_inject --stack aws --role couchbase-query --yes    # terminate one

Lifecycle is filtered on the client: EC2's `instance-lifecycle` filter is not supported by every
endpoint (moto answers 500), and the client check is the one that guards anyway.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from infra.tags import ROLE_APP, ROLE_QUERY, SPOT

SPOT_ROLES = (ROLE_QUERY, ROLE_APP)


class Refused(ValueError):
    """The request is not specific or not safe enough; nothing was touched."""


@dataclass(frozen=True)
class Target:
    instance_id: str
    name: str
    stack: str
    role: str
    zone: str
    instance_type: str


@dataclass(frozen=True)
class Outcome:
    selected: tuple[Target, ...]
    terminated: tuple[str, ...]
    dry_run: bool


def _tags(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def _check_selector(stack: str, role: str) -> None:
    if not stack or any(ch in stack for ch in "*?"):
        raise Refused("a literal --stack is required (no wildcards)")
    if role not in SPOT_ROLES:
        raise Refused(f"--role must be one of {', '.join(SPOT_ROLES)}; data nodes are never targets")


def select_targets(ec2: Any, stack: str, role: str) -> list[Target]:
    """Running instances of the stack and role that are spot by EC2 and by tag."""
    _check_selector(stack, role)
    out: list[Target] = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag:wojak:stack", "Values": [stack]},
            {"Name": "tag:wojak:role", "Values": [role]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
    for page in pages:
        for reservation in page.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                tags = _tags(inst)
                if inst.get("InstanceLifecycle") != "spot" or tags.get("wojak:lifecycle") != SPOT:
                    continue
                # belt and braces: the server-side filters are re-checked here
                if tags.get("wojak:stack") != stack or tags.get("wojak:role") != role:
                    continue
                out.append(
                    Target(
                        instance_id=inst["InstanceId"],
                        name=tags.get("Name", ""),
                        stack=stack,
                        role=role,
                        zone=inst.get("Placement", {}).get("AvailabilityZone", ""),
                        instance_type=inst.get("InstanceType", ""),
                    )
                )
    return sorted(out, key=lambda t: t.instance_id)


def inject(
    ec2: Any,
    stack: str,
    role: str,
    count: int = 1,
    yes: bool = False,
    rng: Optional[random.Random] = None,
) -> Outcome:
    """Pick `count` random spot targets; terminate them only when `yes` is True."""
    if count < 1:
        raise Refused("--count must be at least 1")
    candidates = select_targets(ec2, stack, role)
    chosen = tuple((rng or random.Random()).sample(candidates, min(count, len(candidates))))
    if not yes or not chosen:
        return Outcome(selected=chosen, terminated=(), dry_run=not yes)
    ids = [t.instance_id for t in chosen]
    # re-read right before acting, so an instance that changed since selection is not hit
    fresh = {t.instance_id for t in select_targets(ec2, stack, role)}
    ids = [i for i in ids if i in fresh]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
    return Outcome(selected=chosen, terminated=tuple(ids), dry_run=False)


def gcp_spot_filter(stack: str, role: str) -> str:
    """The Compute Engine list filter equivalent to `select_targets` (labels + SPOT model)."""
    _check_selector(stack, role)
    return (
        f'labels.wojak-stack = "{stack}" AND labels.wojak-role = "{role}" AND '
        f'labels.wojak-lifecycle = "spot" AND scheduling.provisioningModel = "SPOT" AND status = "RUNNING"'
    )


def gcp_inject(project: str, zone: str, stack: str, role: str, count: int = 1, yes: bool = False) -> list[str]:
    """GCP equivalent (not exercised in tests): delete spot VMs of a MIG; the MIG recreates them.

    Same as `gcloud compute instances list --filter=<gcp_spot_filter>` then
    `gcloud compute instances delete NAME --zone ZONE`. Needs google-cloud-compute.
    """
    from google.cloud import compute_v1  # optional dependency, imported only when used

    client = compute_v1.InstancesClient()
    found = [
        i.name
        for i in client.list(project=project, zone=zone, filter=gcp_spot_filter(stack, role))
        if i.scheduling.provisioning_model == "SPOT"
    ]
    chosen = random.sample(found, min(count, len(found)))
    if yes:
        for name in chosen:
            client.delete(project=project, zone=zone, instance=name)
    return chosen


def main(argv: Optional[Sequence[str]] = None, ec2: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="fault_inject", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="wojak:stack tag value (literal)")
    parser.add_argument("--role", required=True, choices=SPOT_ROLES)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--region", default=None)
    parser.add_argument("--endpoint-url", default=None, help="EC2 endpoint (tests, local emulators)")
    parser.add_argument("--yes", action="store_true", help="really terminate (default: dry run)")
    args = parser.parse_args(argv)
    if ec2 is None:
        import boto3

        ec2 = boto3.client("ec2", region_name=args.region, endpoint_url=args.endpoint_url)
    try:
        outcome = inject(ec2, args.stack, args.role, args.count, yes=args.yes)
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if not outcome.selected:
        print(f"no running spot instance with wojak:stack={args.stack} wojak:role={args.role}")
        return 1
    verb = "would terminate" if outcome.dry_run else "terminated"
    for t in outcome.selected:
        if outcome.dry_run or t.instance_id in outcome.terminated:
            print(f"{verb} {t.instance_id} {t.name} {t.zone} {t.instance_type}")
    if outcome.dry_run:
        print("dry run: pass --yes to terminate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
