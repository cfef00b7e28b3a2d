"""Kubernetes option (EKS or GKE): engine + sidecars in one pod, on spot nodes, with a PDB.

The sidecar pattern: with `app.transport = ipc` the containers share an in-memory emptyDir at
/run/wojak for the engine's ipc:// socket; with `curve` they talk over tcp://127.0.0.1 (same pod
network namespace) with CURVE keys from a Secret. Enabled by `wojak:kubernetes.enabled`; the
cluster itself (EKS/GKE with a spot node pool) is provided from outside, through the default
kubeconfig or `kubernetes:kubeconfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from infra.config import AppSettings, CouchbaseSettings, KubernetesSettings
from infra.tags import ROLE_APP, gcp_labels
from infra.workload import (DATA_DIR, ENGINE_METRICS_PORT, HEALTHCHECK, RUN_DIR, containers, engine_toml,
                            secret_values)

# how each managed flavour marks spot nodes; GKE also taints them
SPOT_NODE_LABEL = {"eks": ("eks.amazonaws.com/capacityType", "SPOT"), "gke": ("cloud.google.com/gke-spot", "true")}


@dataclass
class K8sWorkloadArgs:
    stack: str
    settings: KubernetesSettings
    app: AppSettings
    couchbase: CouchbaseSettings
    connstr: str
    store_cloud: str  # whose Couchbase cluster `connstr` is: the engines' scope follows it


class K8sWorkload(pulumi.ComponentResource):
    def __init__(self, name: str, args: K8sWorkloadArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:k8s:Workload", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s, app = args.settings, args.app
        labels = {**gcp_labels(args.stack, ROLE_APP), "app.kubernetes.io/name": "wojak"}
        selector = {"app.kubernetes.io/name": "wojak", "wojak-stack": args.stack}
        ns = k8s.core.v1.Namespace(
            f"{name}-ns", metadata=k8s.meta.v1.ObjectMetaArgs(name=s.namespace, labels=labels), opts=child
        )
        meta = lambda n: k8s.meta.v1.ObjectMetaArgs(name=n, namespace=ns.metadata.name, labels=labels)  # noqa: E731
        secrets = secret_values(app, args.couchbase)
        secret = k8s.core.v1.Secret(
            f"{name}-secret", metadata=meta("wojak-env"), string_data=secrets, type="Opaque", opts=child
        )
        cfg = k8s.core.v1.ConfigMap(
            f"{name}-config", metadata=meta("wojak-config"), data={"wojak.toml": engine_toml(app, args.store_cloud)}, opts=child
        )
        specs = containers(app, args.couchbase, args.connstr)
        pod_containers = []
        for spec in specs:
            env = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(spec.env.items())]
            env += [
                k8s.core.v1.EnvVarArgs(
                    name=k,
                    value_from=k8s.core.v1.EnvVarSourceArgs(
                        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret.metadata.name, key=k)
                    ),
                )
                for k in spec.secret_env
            ]
            engine = spec.name == "engine"
            pod_containers.append(
                k8s.core.v1.ContainerArgs(
                    name=spec.name,
                    image=app.image_ref,
                    args=list(spec.args),
                    env=env,
                    ports=[k8s.core.v1.ContainerPortArgs(container_port=p) for p in spec.ports],
                    volume_mounts=[
                        k8s.core.v1.VolumeMountArgs(name="run", mount_path=RUN_DIR),
                        k8s.core.v1.VolumeMountArgs(name="config", mount_path="/etc/wojak", read_only=True),
                    ] + ([k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR)] if engine else []),
                    resources=k8s.core.v1.ResourceRequirementsArgs(
                        requests={"cpu": "500m" if engine else "100m", "memory": "512Mi" if engine else "128Mi"},
                        limits={"cpu": "2" if engine else "500m", "memory": "1Gi" if engine else "256Mi"},
                    ),
                    security_context=k8s.core.v1.SecurityContextArgs(
                        run_as_non_root=True, allow_privilege_escalation=False, read_only_root_filesystem=True
                    ),
                    # The engine answers `health` over ZeroMQ (the image's HEALTHCHECK, which Kubernetes
                    # ignores): up to 5 minutes to start (journal replay, reconciliation with the broker),
                    # then restarted after 3 missed answers in a row. Sidecars get none: one is only as
                    # healthy as the engine it feeds, and restarting it would not mend the engine.
                    startup_probe=_health_probe(period_s=5, failures=60) if engine else None,
                    liveness_probe=_health_probe(period_s=15, failures=3) if engine else None,
                )
            )
        key, value = SPOT_NODE_LABEL[s.cloud]
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta("wojak"),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=s.replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    # the engine's Prometheus exporter, found by the usual scrape annotations
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations={
                        "prometheus.io/scrape": "true", "prometheus.io/port": str(ENGINE_METRICS_PORT),
                        "prometheus.io/path": "/metrics"}),
                    spec=k8s.core.v1.PodSpecArgs(
                        containers=pod_containers,
                        # spot reclaim gives ~30 s (GKE) / 2 min (EKS): finish in-flight orders first
                        termination_grace_period_seconds=25,
                        volumes=[
                            k8s.core.v1.VolumeArgs(name="run", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(medium="Memory")),
                            # the engine's files (the root filesystem is read-only): kept across
                            # restarts of its container, not across pods - the store is Couchbase
                            k8s.core.v1.VolumeArgs(name="data", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
                            k8s.core.v1.VolumeArgs(
                                name="config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=cfg.metadata.name)
                            ),
                        ],
                        affinity=k8s.core.v1.AffinityArgs(
                            node_affinity=k8s.core.v1.NodeAffinityArgs(
                                required_during_scheduling_ignored_during_execution=k8s.core.v1.NodeSelectorArgs(
                                    node_selector_terms=[
                                        k8s.core.v1.NodeSelectorTermArgs(
                                            match_expressions=[
                                                k8s.core.v1.NodeSelectorRequirementArgs(key=key, operator="In", values=[value])
                                            ]
                                        )
                                    ]
                                )
                            ),
                            # spread replicas so one reclaimed node never takes them all
                            pod_anti_affinity=k8s.core.v1.PodAntiAffinityArgs(
                                preferred_during_scheduling_ignored_during_execution=[
                                    k8s.core.v1.WeightedPodAffinityTermArgs(
                                        weight=100,
                                        pod_affinity_term=k8s.core.v1.PodAffinityTermArgs(
                                            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                                            topology_key="kubernetes.io/hostname",
                                        ),
                                    )
                                ]
                            ),
                        ),
                        tolerations=[
                            k8s.core.v1.TolerationArgs(key=key, operator="Equal", value=value, effect="NoSchedule"),
                            k8s.core.v1.TolerationArgs(key="wojak/spot", operator="Exists", effect="NoSchedule"),
                        ],
                    ),
                ),
            ),
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta("wojak"),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1 if s.replicas > 1 else 0,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
            ),
            opts=child,
        )
        self.register_outputs({"deployment": self.deployment.metadata.name})


def _health_probe(period_s: int, failures: int) -> k8s.core.v1.ProbeArgs:
    return k8s.core.v1.ProbeArgs(
        exec_=k8s.core.v1.ExecActionArgs(command=list(HEALTHCHECK)),
        period_seconds=period_s, timeout_seconds=5, failure_threshold=failures,
    )
