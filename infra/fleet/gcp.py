"""AppFleet on GCP: a spot regional MIG of Container-Optimized OS VMs running engine + sidecars.

cloud-init writes the engine config and one systemd unit per container; the units share
/run/wojak (ipc:// socket) and read secrets from a root-only tmpfs env file filled from Secret
Manager at boot. Plain settings are written to a second env file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi

from infra.config import AppSettings, CouchbaseSettings, GcpSettings
from infra.images import OsImage, cos_cloud_config
from infra.network.gcp import TAG_APP
from infra.secrets import gcp_fetch_script
from infra.spot import GcpSpotGroupArgs, gcp_spot_group
from infra.tags import ROLE_APP, gcp_labels
from infra.workload import APP_UID, DATA_DIR, RUN_DIR, ContainerSpec, containers, engine_toml

SECRET_ENV = "/run/wojak-secrets/app.env"


def _unit(spec: ContainerSpec, image: str) -> str:
    docker = "/usr/bin/docker"
    env_file = f"/var/lib/wojak/{spec.name}.env"
    after = "docker.service" if spec.name == "engine" else "docker.service wojak-engine.service"
    return "\n".join(
        [
            "[Unit]",
            f"Description=wojak {spec.name}",
            f"After={after}",
            "[Service]",
            f"ExecStartPre=-{docker} rm -f {spec.name}",
            f"ExecStart={docker} run --rm --name {spec.name} --network host --env-file {env_file} "
            f"--env-file {SECRET_ENV} -v {RUN_DIR}:{RUN_DIR} -v /var/lib/wojak/etc:/etc/wojak:ro "
            + (f"-v {DATA_DIR}:{DATA_DIR} " if spec.name == "engine" else "")
            + f"{image} {' '.join(spec.args)}",
            f"ExecStop={docker} stop -t 25 {spec.name}",
            "Restart=always",
        ]
    )


def app_cloud_config(app: AppSettings, cb: CouchbaseSettings, connstr: str, project: str, secret_ids: Mapping[str, str]) -> str:
    specs = containers(app, cb, connstr)
    files = [
        ("/var/lib/wojak/etc/wojak.toml", engine_toml(app, "gcp")),
        ("/var/lib/wojak/secrets.sh", gcp_fetch_script(project, secret_ids, SECRET_ENV)),
    ]
    for spec in specs:
        files.append((f"/var/lib/wojak/{spec.name}.env", "\n".join(f"{k}={v}" for k, v in sorted(spec.env.items()))))
        files.append((f"/etc/systemd/system/wojak-{spec.name}.service", _unit(spec, app.image_ref)))
    units = " ".join(f"wojak-{s.name}.service" for s in specs)
    return cos_cloud_config(
        files,
        [
            f"mkdir -p {RUN_DIR} {DATA_DIR}",
            f"chown {APP_UID}:{APP_UID} {RUN_DIR} {DATA_DIR}",  # the containers run as the image's user
            "/bin/bash /var/lib/wojak/secrets.sh",
            "systemctl daemon-reload",
            f"systemctl start {units}",
        ],
    )


@dataclass
class GcpAppFleetArgs:
    stack: str
    settings: GcpSettings
    app: AppSettings
    couchbase: CouchbaseSettings
    connstr: str
    image: OsImage
    subnetwork_id: pulumi.Input[str]
    service_account: pulumi.Input[str]
    secret_ids: Mapping[str, str]


class GcpAppFleet(pulumi.ComponentResource):
    def __init__(self, name: str, args: GcpAppFleetArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:app:GcpFleet", name, None, opts)
        a, s = args, args.settings
        self.group = gcp_spot_group(
            name,
            GcpSpotGroupArgs(
                project=s.project,
                region=s.region,
                zones=s.zones,
                image=a.image,
                machine_type=s.app_machine_type,
                count=s.app_node_count,
                subnetwork=a.subnetwork_id,
                network_tags=[TAG_APP],
                service_account=a.service_account,
                user_data=app_cloud_config(a.app, a.couchbase, a.connstr, s.project, a.secret_ids),
                labels=gcp_labels(a.stack, ROLE_APP, os="cos"),
            ),
            parent=self,
        )
        self.register_outputs({"group": self.group.name})
