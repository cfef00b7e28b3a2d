"""Typed stack settings: read every `wojak:*` key once, validate it, fail early naming the key.

The rest of the program only sees these frozen dataclasses; nothing else calls `pulumi.Config`.
Secrets (`pulumi config set --secret ...`) become `pulumi.Output` values marked secret, so they can
only flow into resource inputs, never into logs or plain outputs.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import pulumi

from infra.network import is_private_range

NAMESPACE = "wojak"
ENGINE_BUCKET = "wojak"  # the bucket the engines' store uses (infra/workload.py writes it into their config)
CLOUDS = ("aws", "gcp")
SOURCES = ("http", "sqs", "sns", "stepfunctions", "kinesis", "pubsub", "kafka", "rabbitmq")
TRANSPORTS = ("ipc", "curve")
EDITIONS = ("community", "enterprise")
# Keys a user sets with `pulumi config set --secret`; listed so `wojak plan` can stand in for them.
SECRET_KEYS = ("couchbasePassword", "sourceSecrets", "curveServerSecret", "curveClientSecret")

_SETTING_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_BUCKET_RE = re.compile(r"^[A-Za-z0-9_.%-]{1,100}$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_HTTP_URL = re.compile(r"^https?://[^\s/]+")


class ConfigError(ValueError):
    """A stack setting is missing or invalid; the message starts with the full key."""


# ---------------------------------------------------------------------------------------------
# settings dataclasses


@dataclass(frozen=True)
class AwsSettings:
    region: str
    zones: tuple[str, ...]
    vpc_cidr: str
    data_instance_type: str
    data_node_count: int
    data_volume_gb: int
    query_instance_types: tuple[str, ...]
    query_node_count: int
    app_instance_types: tuple[str, ...]
    app_node_count: int
    reserved: bool


@dataclass(frozen=True)
class GcpSettings:
    project: str
    region: str
    zones: tuple[str, ...]
    cidr: str
    data_machine_type: str
    data_node_count: int
    data_disk_gb: int
    query_machine_type: str
    query_node_count: int
    app_machine_type: str
    app_node_count: int
    reserved: bool


@dataclass(frozen=True)
class Bucket:
    name: str
    ram_mb: int
    replicas: int


@dataclass(frozen=True)
class CouchbaseSettings:
    version: str
    edition: str
    image_ref: str
    admin_username: str
    data_ram_mb: int
    index_ram_mb: int
    buckets: tuple[Bucket, ...]
    password: pulumi.Output  # secret


@dataclass(frozen=True)
class AppSettings:
    image_ref: str
    sidecars: tuple[str, ...]
    transport: str  # "ipc" (shared emptyDir/volume) or "curve" (tcp://localhost with CURVE)
    engine_port: int
    http_port: int
    # plain per-source settings, already as env var names: WOJAK_SQS_QUEUE_URL -> value
    source_env: Mapping[str, str]
    # secret per-source settings: env var name -> secret Output
    source_secrets: Mapping[str, pulumi.Output]
    curve_server_public: Optional[str]
    curve_client_public: Optional[str]
    curve_server_secret: Optional[pulumi.Output]
    curve_client_secret: Optional[pulumi.Output]
    # The risk-management system's endpoint for escalations (HTTP POST); "" = a log file on the
    # engine's data volume, read with `wojak book escalations`.
    escalation_url: str = ""

    @property
    def engine_endpoint(self) -> str:
        """The engine's bind address, as the sidecars in the same pod/VM reach it."""
        if self.transport == "ipc":
            return "ipc:///run/wojak/engine.sock"
        return f"tcp://127.0.0.1:{self.engine_port}"


@dataclass(frozen=True)
class AccessSettings:
    # CIDRs allowed to reach the HTTP sidecar (never Couchbase, never 22)
    allowed_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class KubernetesSettings:
    enabled: bool
    namespace: str
    replicas: int
    cloud: str  # which managed cluster flavour the spot affinity targets: eks | gke


@dataclass(frozen=True)
class StackSettings:
    stack: str
    clouds: tuple[str, ...]
    peer_stack: Optional[str]
    peer_cidr: Optional[str]  # the other cloud's private range (single-cloud stacks), for XDCR
    aws: Optional[AwsSettings]
    gcp: Optional[GcpSettings]
    couchbase: CouchbaseSettings
    app: AppSettings
    access: AccessSettings
    kubernetes: KubernetesSettings
    xdcr_buckets: tuple[str, ...] = field(default_factory=tuple)

    @property
    def multicloud(self) -> bool:
        return len(self.clouds) > 1


# ---------------------------------------------------------------------------------------------
# small typed readers; each error names the full key


class _Section:
    """Reads one object-valued key (e.g. `wojak:aws`) with typed accessors."""

    def __init__(self, key: str, raw: Any):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{key}: must be an object, got {type(raw).__name__}")
        self.key = key
        self.raw = raw

    def _err(self, name: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.key}.{name}: {msg}")

    def value(self, name: str, default: Any = ...) -> Any:
        if name not in self.raw:
            if default is ...:
                raise self._err(name, "is required")
            return default
        return self.raw[name]

    def str(self, name: str, default: Any = ..., pattern: Optional[re.Pattern] = None) -> str:
        v = self.value(name, default)
        if not isinstance(v, str) or not v:
            raise self._err(name, f"must be a non-empty string, got {v!r}")
        if pattern is not None and not pattern.match(v):
            raise self._err(name, f"{v!r} does not match {pattern.pattern}")
        return v

    def int(self, name: str, default: Any = ..., lo: int = 0, hi: int = 10_000) -> int:
        v = self.value(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._err(name, f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise self._err(name, f"must be between {lo} and {hi}, got {v}")
        return v

    def bool(self, name: str, default: Any = ...) -> bool:
        v = self.value(name, default)
        if not isinstance(v, bool):
            raise self._err(name, f"must be true or false, got {v!r}")
        return v

    def strs(self, name: str, default: Any = ..., min_len: int = 1) -> tuple[str, ...]:
        v = self.value(name, default)
        if not isinstance(v, list) or len(v) < min_len or not all(isinstance(s, str) and s for s in v):
            raise self._err(name, f"must be a list of at least {min_len} non-empty strings, got {v!r}")
        if len(set(v)) != len(v):
            raise self._err(name, f"has duplicates: {v!r}")
        return tuple(v)

    def choice(self, name: str, choices: tuple[str, ...], default: Any = ...) -> str:
        v = self.value(name, default)
        if v not in choices:
            raise self._err(name, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def cidr(self, name: str, default: Any = ..., private: bool = True) -> str:
        v = self.str(name, default)
        return _check_cidr(f"{self.key}.{name}", v, private=private)


def _check_cidr(key: str, v: str, private: bool) -> str:
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{key}: {v!r} is not a CIDR ({exc})") from None
    if private and not is_private_range(v):
        raise ConfigError(f"{key}: {v!r} must be a private range")
    return v


# ---------------------------------------------------------------------------------------------
# parsers per section


def _parse_aws(s: _Section) -> AwsSettings:
    zones = s.strs("zones")
    data_count = s.int("dataNodeCount", 3, lo=1, hi=64)
    return AwsSettings(
        region=s.str("region"),
        zones=zones,
        vpc_cidr=s.cidr("vpcCidr"),
        data_instance_type=s.str("dataInstanceType"),
        data_node_count=data_count,
        data_volume_gb=s.int("dataVolumeGb", 200, lo=20, hi=16_384),
        query_instance_types=s.strs("queryInstanceTypes"),
        query_node_count=s.int("queryNodeCount", 2, lo=0, hi=64),
        app_instance_types=s.strs("appInstanceTypes"),
        app_node_count=s.int("appNodeCount", 2, lo=0, hi=256),
        reserved=s.bool("reserved", True),
    )


def _parse_gcp(s: _Section) -> GcpSettings:
    return GcpSettings(
        project=s.str("project"),
        region=s.str("region"),
        zones=s.strs("zones"),
        cidr=s.cidr("cidr"),
        data_machine_type=s.str("dataMachineType"),
        data_node_count=s.int("dataNodeCount", 3, lo=1, hi=64),
        data_disk_gb=s.int("dataDiskGb", 200, lo=20, hi=65_536),
        query_machine_type=s.str("queryMachineType"),
        query_node_count=s.int("queryNodeCount", 2, lo=0, hi=64),
        app_machine_type=s.str("appMachineType"),
        app_node_count=s.int("appNodeCount", 2, lo=0, hi=256),
        reserved=s.bool("reserved", True),
    )


def _parse_buckets(s: _Section) -> tuple[Bucket, ...]:
    raw = s.value("buckets", [{"name": "wojak", "ramMb": 1024, "replicas": 1}])
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{s.key}.buckets: must be a non-empty list of objects")
    out = []
    for i, item in enumerate(raw):
        b = _Section(f"{s.key}.buckets[{i}]", item)
        out.append(
            Bucket(
                name=b.str("name", pattern=_BUCKET_RE),
                ram_mb=b.int("ramMb", 1024, lo=100, hi=1_048_576),
                replicas=b.int("replicas", 1, lo=0, hi=3),
            )
        )
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{s.key}.buckets: duplicate bucket names {names}")
    if ENGINE_BUCKET not in names:
        # the engines are configured with it (infra/workload.py)
        raise ConfigError(f"{s.key}.buckets: must include the engine's bucket {ENGINE_BUCKET!r}")
    return tuple(out)


def _parse_source_env(key: str, raw: Any, sidecars: tuple[str, ...]) -> dict[str, str]:
    """`{sqs: {QUEUE_URL: ...}}` -> `{WOJAK_SQS_QUEUE_URL: ...}`; only for sidecars that run."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: must be an object of source -> {{SETTING: value}}")
    env: dict[str, str] = {}
    for source, settings in raw.items():
        if source not in SOURCES:
            raise ConfigError(f"{key}.{source}: unknown source; expected one of {', '.join(SOURCES)}")
        if source not in sidecars:
            raise ConfigError(f"{key}.{source}: settings given for a sidecar that is not in sidecars")
        if not isinstance(settings, dict):
            raise ConfigError(f"{key}.{source}: must be an object of SETTING -> value")
        for name, value in settings.items():
            if not _SETTING_RE.match(str(name)):
                raise ConfigError(f"{key}.{source}.{name}: setting names are UPPER_SNAKE_CASE")
            if not isinstance(value, (str, int, float, bool)):
                raise ConfigError(f"{key}.{source}.{name}: must be a scalar")
            env[f"WOJAK_{source.upper()}_{name}"] = str(value)
    return env


def _secret(key: str, reader: Callable[[str], Optional[str]], required: bool) -> Optional[pulumi.Output]:
    raw = reader(key)
    if raw is None or raw == "":
        if required:
            raise ConfigError(
                f"{NAMESPACE}:{key}: is required; set it with `pulumi config set --secret {key} ...`"
            )
        return None
    return pulumi.Output.secret(raw)


def _parse_source_secrets(
    reader: Callable[[str], Optional[str]], sidecars: tuple[str, ...]
) -> dict[str, pulumi.Output]:
    key = f"{NAMESPACE}:sourceSecrets"
    raw = reader("sourceSecrets")
    if raw is None:
        return {}
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"{key}: must be a JSON object of WOJAK_<SOURCE>_<SETTING> -> value") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{key}: must be a JSON object of WOJAK_<SOURCE>_<SETTING> -> value")
    out: dict[str, pulumi.Output] = {}
    for name, value in obj.items():
        parts = str(name).split("_")
        source = parts[1].lower() if len(parts) > 2 and parts[0] == "WOJAK" else None
        if source not in SOURCES or not _SETTING_RE.match(name):
            # never echo the value: only the key name is safe to print
            raise ConfigError(f"{key}.{name}: names must look like WOJAK_<SOURCE>_<SETTING>")
        if source not in sidecars:
            raise ConfigError(f"{key}.{name}: secret given for a sidecar that is not in sidecars")
        out[name] = pulumi.Output.secret(str(value))
    return out


def _parse_app(s: _Section, reader: Callable[[str], Optional[str]]) -> AppSettings:
    sidecars = s.strs("sidecars", ["http"], min_len=0)
    for src in sidecars:
        if src not in SOURCES:
            raise ConfigError(f"{s.key}.sidecars: unknown source {src!r}; expected one of {', '.join(SOURCES)}")
    transport = s.choice("transport", TRANSPORTS, "ipc")
    app = AppSettings(
        image_ref=s.str("imageRef"),
        sidecars=sidecars,
        transport=transport,
        engine_port=s.int("enginePort", 5555, lo=1024, hi=65535),
        http_port=s.int("httpPort", 8080, lo=1024, hi=65535),
        source_env=_parse_source_env(f"{s.key}.sourceSettings", s.value("sourceSettings", None), sidecars),
        source_secrets=_parse_source_secrets(reader, sidecars),
        curve_server_public=s.str("curveServerPublic") if transport == "curve" else None,
        curve_client_public=s.str("curveClientPublic") if transport == "curve" else None,
        curve_server_secret=_secret("curveServerSecret", reader, transport == "curve"),
        curve_client_secret=_secret("curveClientSecret", reader, transport == "curve"),
        escalation_url=s.str("escalationUrl", pattern=_HTTP_URL) if s.value("escalationUrl", None) is not None else "",
    )
    return app


# ---------------------------------------------------------------------------------------------
# entry point


def parse(stack: str, reader: Callable[[str], Optional[str]]) -> StackSettings:
    """Build settings from a raw reader `key -> str|None` (keys without the namespace).

    Kept separate from `load()` so tests can validate any config dict without a Pulumi runtime.
    """

    def obj(key: str, required: bool = False) -> Any:
        raw = reader(key)
        if raw is None:
            if required:
                raise ConfigError(f"{NAMESPACE}:{key}: is required")
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            # plain scalars are stored unquoted
            return raw

    clouds_raw = obj("clouds", required=True)
    if not isinstance(clouds_raw, list) or not clouds_raw or any(c not in CLOUDS for c in clouds_raw):
        raise ConfigError(f"{NAMESPACE}:clouds: must be a non-empty list drawn from {', '.join(CLOUDS)}")
    if len(set(clouds_raw)) != len(clouds_raw):
        raise ConfigError(f"{NAMESPACE}:clouds: has duplicates")
    clouds = tuple(clouds_raw)

    peer = obj("peerStack")
    if peer is not None and (not isinstance(peer, str) or peer.count("/") != 2):
        raise ConfigError(f"{NAMESPACE}:peerStack: must be 'org/project/stack', got {peer!r}")
    if peer is not None and len(clouds) != 1:
        raise ConfigError(f"{NAMESPACE}:peerStack: only a single-cloud stack takes a peer stack")

    peer_cidr = obj("peerCidr")
    if peer_cidr is not None:
        if len(clouds) != 1:
            raise ConfigError(f"{NAMESPACE}:peerCidr: only a single-cloud stack takes a peer CIDR")
        _check_cidr(f"{NAMESPACE}:peerCidr", str(peer_cidr), private=True)

    aws = _parse_aws(_Section(f"{NAMESPACE}:aws", obj("aws", True))) if "aws" in clouds else None
    gcp = _parse_gcp(_Section(f"{NAMESPACE}:gcp", obj("gcp", True))) if "gcp" in clouds else None
    if aws and gcp and ipaddress.ip_network(aws.vpc_cidr).overlaps(ipaddress.ip_network(gcp.cidr)):
        # XDCR routes between the two networks: overlapping ranges would make that impossible
        raise ConfigError(f"{NAMESPACE}:gcp.cidr: {gcp.cidr} overlaps {NAMESPACE}:aws.vpcCidr {aws.vpc_cidr}")

    cb = _Section(f"{NAMESPACE}:couchbase", obj("couchbase", True))
    couchbase = CouchbaseSettings(
        version=cb.str("version", pattern=_VERSION_RE),
        edition=cb.choice("edition", EDITIONS),
        image_ref=cb.str("imageRef"),
        admin_username=cb.str("adminUsername", "Administrator"),
        data_ram_mb=cb.int("dataRamMb", 4096, lo=256, hi=1_048_576),
        index_ram_mb=cb.int("indexRamMb", 1024, lo=256, hi=1_048_576),
        buckets=_parse_buckets(cb),
        password=_secret("couchbasePassword", reader, True),  # type: ignore[arg-type]
    )
    tag = couchbase.image_ref.rsplit("/", 1)[-1].partition(":")[2]
    if tag and couchbase.version not in tag:
        # the version is what the bootstrap and the docs promise: the image must agree with it
        raise ConfigError(
            f"{NAMESPACE}:couchbase.imageRef: tag {tag!r} does not carry couchbase.version {couchbase.version}"
        )
    if sum(b.ram_mb for b in couchbase.buckets) > couchbase.data_ram_mb:
        raise ConfigError(f"{NAMESPACE}:couchbase.buckets: bucket RAM exceeds couchbase.dataRamMb")

    app = _parse_app(_Section(f"{NAMESPACE}:app", obj("app", True)), reader)

    acc = _Section(f"{NAMESPACE}:access", obj("access"))
    allowed = acc.strs("allowedCidrs", [], min_len=0)
    for i, c in enumerate(allowed):
        _check_cidr(f"{NAMESPACE}:access.allowedCidrs[{i}]", c, private=False)
        if ipaddress.ip_network(c).prefixlen == 0:
            raise ConfigError(f"{NAMESPACE}:access.allowedCidrs[{i}]: the whole internet is not an allowed CIDR")

    k8 = _Section(f"{NAMESPACE}:kubernetes", obj("kubernetes"))
    kubernetes = KubernetesSettings(
        enabled=k8.bool("enabled", False),
        namespace=k8.str("namespace", "wojak"),
        replicas=k8.int("replicas", 2, lo=1, hi=100),
        cloud=k8.choice("cloud", ("eks", "gke"), "eks" if "aws" in clouds else "gke"),
    )

    xd = _Section(f"{NAMESPACE}:xdcr", obj("xdcr"))
    xdcr_buckets = xd.strs("buckets", ["wojak"], min_len=0)
    for b in xdcr_buckets:
        if b not in {x.name for x in couchbase.buckets}:
            raise ConfigError(f"{NAMESPACE}:xdcr.buckets: {b!r} is not in couchbase.buckets")

    return StackSettings(
        stack=stack,
        clouds=clouds,
        peer_stack=peer,
        peer_cidr=peer_cidr,
        aws=aws,
        gcp=gcp,
        couchbase=couchbase,
        app=app,
        access=AccessSettings(allowed_cidrs=allowed),
        kubernetes=kubernetes,
        xdcr_buckets=xdcr_buckets,
    )


def load() -> StackSettings:
    """Read the running stack's config (CLI or mocks) and validate it."""
    from pulumi.runtime.config import get_config

    # raw reads: secrets are wrapped into secret Outputs by `_secret`, never returned in clear
    return parse(pulumi.get_stack(), lambda key: get_config(f"{NAMESPACE}:{key}"))
