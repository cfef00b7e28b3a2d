"""Secret stores per cloud: secret config values become cloud secrets the nodes read at start.

AWS: one Secrets Manager secret holding a JSON object (env var name -> value); ECS injects each key
as an env var (`valueFrom: <arn>:<KEY>::`). GCP: one Secret Manager secret per env var, readable by
the node service account only; the VM's start script reads them into a tmpfs env file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from infra.tags import base_aws_tags


@dataclass
class AwsSecretsArgs:
    stack: str
    values: Mapping[str, pulumi.Output]


class AwsSecrets(pulumi.ComponentResource):
    secret: aws.secretsmanager.Secret

    def __init__(self, name: str, args: AwsSecretsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:secrets:AwsSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.secret = aws.secretsmanager.Secret(
            f"{name}-env", tags=base_aws_tags(args.stack, f"{name}-env"), opts=child
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-env-version",
            secret_id=self.secret.id,
            # json_dumps keeps the secret-ness of every value it contains
            secret_string=pulumi.Output.json_dumps(dict(args.values)),
            opts=child,
        )
        self.register_outputs({"secretArn": self.secret.arn})


@dataclass
class GcpSecretsArgs:
    stack: str
    project: str
    values: Mapping[str, pulumi.Output]
    reader_email: pulumi.Input[str] = ""  # the node service account that may read the secrets


def gcp_secret_id(stack: str, key: str) -> str:
    return f"wojak-{stack}-{key.lower().replace('_', '-')}"


class GcpSecrets(pulumi.ComponentResource):
    def __init__(self, name: str, args: GcpSecretsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:secrets:GcpSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.ids: dict[str, str] = {}
        for key in sorted(args.values):
            secret_id = gcp_secret_id(args.stack, key)
            secret = gcp.secretmanager.Secret(
                f"{name}-{secret_id}",
                project=args.project,
                secret_id=secret_id,
                replication=gcp.secretmanager.SecretReplicationArgs(auto=gcp.secretmanager.SecretReplicationAutoArgs()),
                opts=child,
            )
            gcp.secretmanager.SecretVersion(
                f"{name}-{secret_id}-v", secret=secret.id, secret_data=args.values[key], opts=child
            )
            gcp.secretmanager.SecretIamMember(
                f"{name}-{secret_id}-reader",
                project=args.project,
                secret_id=secret.secret_id,
                role="roles/secretmanager.secretAccessor",
                member=pulumi.Output.from_input(args.reader_email).apply(lambda e: f"serviceAccount:{e}"),
                opts=child,
            )
            self.ids[key] = secret_id
        self.register_outputs({"secretIds": list(self.ids.values())})


def gcp_fetch_script(project: str, ids: Mapping[str, str], env_file: str, aliases: Optional[Mapping[str, str]] = None) -> str:
    """Shell run at boot on a COS VM: read the named secrets into a root-only tmpfs env file.

    `aliases` adds extra names for a value (the Couchbase bootstrap reads CB_PASSWORD).
    """
    lines = [
        "#!/bin/bash",
        "set -euo pipefail",
        "umask 077",
        f"mkdir -p $(dirname {env_file}) && : > {env_file}",
        "MD=http://metadata.google.internal/computeMetadata/v1",
        'TOKEN=$(curl -fsS -H "Metadata-Flavor: Google" '
        '"$MD/instance/service-accounts/default/token" | sed -E \'s/.*"access_token": *"([^"]+)".*/\\1/\')',
        "fetch() {",
        '  curl -fsS -H "Authorization: Bearer $TOKEN" '
        f'"https://secretmanager.googleapis.com/v1/projects/{project}/secrets/$1/versions/latest:access" '
        "| sed -E 's/.*\"data\": *\"([^\"]+)\".*/\\1/' | base64 -d",
        "}",
    ]
    for env, sid in sorted(ids.items()):
        names = [env] + [a for a, src in sorted((aliases or {}).items()) if src == env]
        lines.append(f'V=$(fetch {sid}); for n in {" ".join(names)}; do echo "$n=$V" >> {env_file}; done')
    return "\n".join(lines) + "\n"
