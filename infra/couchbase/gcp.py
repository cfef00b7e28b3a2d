"""CouchbaseCluster on GCP: standard (non-spot) data VMs with PD-SSD disks, spot query/index MIG.

All nodes run Container-Optimized OS; cloud-init starts Couchbase and the bootstrap as systemd
units running containers. On spot preemption GCP sends an ACPI shutdown: systemd stops the
bootstrap container, whose SIGTERM trap removes the node from the cluster. A Cloud DNS private
zone names the data nodes and publishes the SRV record clients bootstrap from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.access import OSLOGIN_METADATA
from infra.config import CouchbaseSettings, GcpSettings
from infra.couchbase import ADMIN_PORT
from infra.couchbase.bootstrap import BootstrapArgs, script
from infra.images import OsImage, cos_cloud_config
from infra.network.gcp import TAG_COUCHBASE
from infra.secrets import gcp_fetch_script
from infra.spot import GcpSpotGroupArgs, gcp_spot_group
from infra.tags import ROLE_DATA, ROLE_QUERY, gcp_labels

DATA_DEVICE = "couchbase-data"
ENV_FILE = "/run/wojak/cb.env"


def couchbase_cloud_config(cb: CouchbaseSettings, boot_script: str, fetch_script: str, data_disk: bool) -> str:
    """cloud-init for a Couchbase COS VM (data disk mount only on data nodes)."""
    docker = "/usr/bin/docker"
    server_unit = "\n".join(
        [
            "[Unit]",
            "Description=Couchbase Server",
            "After=docker.service",
            "[Service]",
            f"ExecStartPre=-{docker} rm -f couchbase",
            f"ExecStart={docker} run --rm --name couchbase --network host --ulimit nofile=200000:200000 "
            f"-v /mnt/disks/couchbase:/opt/couchbase/var {cb.image_ref}",
            f"ExecStop={docker} stop -t 60 couchbase",
            "Restart=always",
        ]
    )
    boot_unit = "\n".join(
        [
            "[Unit]",
            "Description=Couchbase join/leave",
            "After=couchbase.service",
            "[Service]",
            f"ExecStartPre=-{docker} rm -f cb-bootstrap",
            f"ExecStart={docker} run --rm --name cb-bootstrap --network host --env-file {ENV_FILE} "
            f"-v /var/lib/wojak:/wojak:ro --entrypoint /bin/sh {cb.image_ref} /wojak/bootstrap.sh",
            # GCP gives a preempted VM 30 s: leave within it
            f"ExecStop={docker} stop -t 25 cb-bootstrap",
            "TimeoutStopSec=30",
        ]
    )
    mount = (
        f"mkdir -p /mnt/disks/couchbase && (blkid /dev/disk/by-id/google-{DATA_DEVICE} || "
        f"mkfs.ext4 -F /dev/disk/by-id/google-{DATA_DEVICE}) && "
        f"mount -o discard,defaults /dev/disk/by-id/google-{DATA_DEVICE} /mnt/disks/couchbase"
        if data_disk
        else "mkdir -p /mnt/disks/couchbase"
    )
    return cos_cloud_config(
        files=[
            ("/var/lib/wojak/bootstrap.sh", boot_script),
            ("/var/lib/wojak/secrets.sh", fetch_script),
            ("/etc/systemd/system/couchbase.service", server_unit),
            ("/etc/systemd/system/couchbase-bootstrap.service", boot_unit),
        ],
        commands=[
            mount,
            "/bin/bash /var/lib/wojak/secrets.sh",
            "systemctl daemon-reload",
            "systemctl start couchbase.service couchbase-bootstrap.service",
        ],
    )


@dataclass
class GcpCouchbaseClusterArgs:
    stack: str
    settings: GcpSettings
    couchbase: CouchbaseSettings
    image: OsImage
    network_id: pulumi.Input[str]
    subnetwork_id: pulumi.Input[str]
    service_account: pulumi.Input[str]
    secret_ids: dict  # env name -> Secret Manager id
    dns_domain: str  # e.g. gcp.wojak.internal


class GcpCouchbaseCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: GcpCouchbaseClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:couchbase:GcpCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s, cb = args.settings, args.couchbase
        self.seed_host = f"cb-data-0.{args.dns_domain}"
        self.srv_name = f"cb.{args.dns_domain}"
        self.connstr = f"couchbase://{self.srv_name}"
        self.admin_endpoint = f"{self.seed_host}:{ADMIN_PORT}"
        self.zone = gcp.dns.ManagedZone(
            f"{name}-dns",
            project=s.project,
            dns_name=f"{args.dns_domain}.",
            visibility="private",
            description="Wojak service discovery (private)",
            private_visibility_config=gcp.dns.ManagedZonePrivateVisibilityConfigArgs(
                networks=[gcp.dns.ManagedZonePrivateVisibilityConfigNetworkArgs(network_url=args.network_id)]
            ),
            opts=child,
        )
        fetch = gcp_fetch_script(
            s.project,
            {"WOJAK_COUCHBASE_PASSWORD": args.secret_ids["WOJAK_COUCHBASE_PASSWORD"]},
            ENV_FILE,
            aliases={"CB_PASSWORD": "WOJAK_COUCHBASE_PASSWORD"},
        ) + f'echo "CB_USERNAME={cb.admin_username}" >> {ENV_FILE}\n'
        cluster_name = f"wojak-{args.stack}-gcp"

        self.data_nodes = []
        srv = []
        data_cfg = couchbase_cloud_config(
            cb, script(BootstrapArgs("gcp", ROLE_DATA, self.seed_host, cluster_name, cb)), fetch, data_disk=True
        )
        for i in range(s.data_node_count):
            zone = s.zones[i % len(s.zones)]
            node_name = f"{name}-data-{i}"
            labels = gcp_labels(args.stack, ROLE_DATA, reserved=str(s.reserved).lower(), os="cos")
            disk = gcp.compute.Disk(
                f"{node_name}-disk",
                project=s.project,
                zone=zone,
                type="pd-ssd",
                size=s.data_disk_gb,
                labels=labels,
                opts=child,
            )
            node = gcp.compute.Instance(
                node_name,
                project=s.project,
                zone=zone,
                machine_type=s.data_machine_type,
                boot_disk=gcp.compute.InstanceBootDiskArgs(
                    initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(image=args.image.id, size=20)
                ),
                attached_disks=[gcp.compute.InstanceAttachedDiskArgs(source=disk.id, device_name=DATA_DEVICE)],
                # no access_configs: no public IP
                network_interfaces=[gcp.compute.InstanceNetworkInterfaceArgs(subnetwork=args.subnetwork_id)],
                scheduling=gcp.compute.InstanceSchedulingArgs(
                    provisioning_model="STANDARD",
                    preemptible=False,
                    automatic_restart=True,
                    on_host_maintenance="MIGRATE",  # live-migrate rather than stop a data node
                ),
                service_account=gcp.compute.InstanceServiceAccountArgs(
                    email=args.service_account, scopes=["cloud-platform"]
                ),
                shielded_instance_config=gcp.compute.InstanceShieldedInstanceConfigArgs(enable_secure_boot=True),
                metadata={"user-data": data_cfg, **OSLOGIN_METADATA},
                labels=labels,
                tags=[TAG_COUCHBASE],
                allow_stopping_for_update=True,
                opts=child,
            )
            gcp.dns.RecordSet(
                f"{node_name}-a",
                project=s.project,
                managed_zone=self.zone.name,
                name=f"cb-data-{i}.{args.dns_domain}.",
                type="A",
                ttl=60,
                rrdatas=[node.network_interfaces.apply(lambda nics: nics[0].network_ip)],
                opts=child,
            )
            srv.append(f"0 0 11210 cb-data-{i}.{args.dns_domain}.")
            self.data_nodes.append(node)
        gcp.dns.RecordSet(
            f"{name}-srv",
            project=s.project,
            managed_zone=self.zone.name,
            name=f"_couchbase._tcp.{self.srv_name}.",
            type="SRV",
            ttl=60,
            rrdatas=srv,
            opts=child,
        )
        query_cfg = couchbase_cloud_config(
            cb, script(BootstrapArgs("gcp", ROLE_QUERY, self.seed_host, cluster_name, cb)), fetch, data_disk=False
        )
        self.query_group = gcp_spot_group(
            f"{name}-query",
            GcpSpotGroupArgs(
                project=s.project,
                region=s.region,
                zones=s.zones,
                image=args.image,
                machine_type=s.query_machine_type,
                count=s.query_node_count,
                subnetwork=args.subnetwork_id,
                network_tags=[TAG_COUCHBASE],
                service_account=args.service_account,
                user_data=query_cfg,
                labels=gcp_labels(args.stack, ROLE_QUERY, os="cos"),
            ),
            parent=self,
        )
        self.register_outputs({"dataNodes": [n.name for n in self.data_nodes], "connstr": self.connstr})
