"""XDCR between two Couchbase clusters as a Pulumi dynamic resource, over Couchbase's REST API.

One `XdcrReplication` = one direction: a remote-cluster reference on the source cluster
(`/pools/default/remoteClusters`) plus one continuous replication per bucket
(`/controller/createReplication`). `Xdcr` declares both directions. The provider is idempotent:
`create` adopts a reference or replication that already exists, `delete` tolerates 404s, and
`diff` names exactly the inputs that force a replacement. Passwords stay Pulumi secrets.

The provider runs where `pulumi up` runs, so that host must reach both clusters' port 8091
(a runner inside the network, or over the private interconnect): never open 8091 publicly.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

# changing these means a different reference on a different cluster: replace, don't update
REPLACE_KEYS = ("source_host", "target_name")
SECRET_KEYS = ("source_password", "target_password")
COMPARED_KEYS = REPLACE_KEYS + (
    "source_username",
    "source_password",
    "target_host",
    "target_username",
    "target_password",
    "buckets",
    "scheme",
)


class CouchbaseRestError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str):
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class CouchbaseRest:
    """A minimal Couchbase admin REST client: basic auth, form bodies, JSON answers, timeouts."""

    def __init__(self, host: str, username: str, password: str, scheme: str = "http", timeout: float = 10.0):
        self.base = f"{scheme}://{host}"
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._auth = f"Basic {token}"
        self.timeout = timeout

    def request(self, method: str, path: str, form: Optional[dict] = None) -> Any:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self._auth)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            # `with` closes the connection even on errors
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            exc.close()
            raise CouchbaseRestError(exc.code, method, path, body) from None
        return json.loads(body) if body.strip() else None

    # -- remote cluster references
    def remote_clusters(self) -> list[dict]:
        return [r for r in (self.request("GET", "/pools/default/remoteClusters") or []) if not r.get("deleted")]

    def find_remote(self, name: str) -> Optional[dict]:
        return next((r for r in self.remote_clusters() if r.get("name") == name), None)

    def put_remote(self, name: str, hostname: str, username: str, password: str) -> dict:
        form = {"name": name, "hostname": hostname, "username": username, "password": password}
        if self.find_remote(name) is None:
            return self.request("POST", "/pools/default/remoteClusters", form)
        return self.request("POST", f"/pools/default/remoteClusters/{urllib.parse.quote(name, safe='')}", form)

    def delete_remote(self, name: str) -> None:
        try:
            self.request("DELETE", f"/pools/default/remoteClusters/{urllib.parse.quote(name, safe='')}")
        except CouchbaseRestError as exc:
            if exc.status != 404:
                raise

    # -- replications
    def replications(self) -> list[dict]:
        return [t for t in (self.request("GET", "/pools/default/tasks") or []) if t.get("type") == "xdcr"]

    def create_replication(self, remote_name: str, remote_uuid: str, bucket: str) -> str:
        wanted = f"{remote_uuid}/{bucket}/{bucket}"
        if any(t.get("id") == wanted for t in self.replications()):
            return wanted  # adopt: creating it again would be refused
        ans = self.request(
            "POST",
            "/controller/createReplication",
            {"fromBucket": bucket, "toCluster": remote_name, "toBucket": bucket, "replicationType": "continuous"},
        )
        return ans["id"]

    def cancel_replication(self, rep_id: str) -> None:
        try:
            self.request("DELETE", f"/controller/cancelXDCR/{urllib.parse.quote(rep_id, safe='')}")
        except CouchbaseRestError as exc:
            if exc.status != 404:
                raise


def _client(props: dict, side: str) -> CouchbaseRest:
    return CouchbaseRest(
        props[f"{side}_host"],
        props[f"{side}_username"],
        props[f"{side}_password"],
        scheme=props.get("scheme", "http"),
        timeout=float(props.get("timeout_seconds", 10)),
    )


def _wait(fn, wait_seconds: float):
    """Retry while a freshly booted cluster is not answering yet (connection refused, 5xx)."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.1
    while True:
        try:
            return fn()
        except (urllib.error.URLError, ConnectionError, TimeoutError, CouchbaseRestError) as exc:
            retryable = not isinstance(exc, CouchbaseRestError) or exc.status >= 500
            left = deadline - time.monotonic()
            if not retryable or left <= 0:
                raise
            time.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)  # back off: a cluster takes minutes to initialise


class XdcrProvider(ResourceProvider):
    """CRUD for one direction of XDCR. Stateless: everything it needs is in the props."""

    def _apply(self, props: dict, old_buckets: Sequence[str] = ()) -> dict:
        src = _client(props, "source")
        wait = float(props.get("wait_seconds", 0))

        def run() -> dict:
            src.put_remote(props["target_name"], props["target_host"], props["target_username"], props["target_password"])
            remote = src.find_remote(props["target_name"])
            if remote is None:
                raise CouchbaseRestError(500, "GET", "/pools/default/remoteClusters", "reference not visible yet")
            ids = {b: src.create_replication(props["target_name"], remote["uuid"], b) for b in props["buckets"]}
            for gone in set(old_buckets) - set(props["buckets"]):
                src.cancel_replication(f"{remote['uuid']}/{gone}/{gone}")
            return {**props, "remote_uuid": remote["uuid"], "replication_ids": [ids[b] for b in props["buckets"]]}

        return _wait(run, wait)

    def create(self, props: dict) -> CreateResult:
        outs = self._apply(props)
        return CreateResult(id_=f"{props['source_host']}->{props['target_name']}", outs=outs)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = [k for k in COMPARED_KEYS if olds.get(k) != news.get(k)]
        replaces = [k for k in changed if k in REPLACE_KEYS]
        return DiffResult(
            changes=bool(changed), replaces=replaces, stables=list(REPLACE_KEYS), delete_before_replace=True
        )

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(outs=self._apply(news, old_buckets=olds.get("buckets", [])))

    def read(self, id_: str, props: dict) -> ReadResult:
        src = _client(props, "source")
        remote = src.find_remote(props["target_name"])
        if remote is None:
            return ReadResult(id_=None, outs={})  # gone: Pulumi will recreate it
        live = {t["id"] for t in src.replications()}
        ids = [i for i in props.get("replication_ids", []) if i in live]
        return ReadResult(
            id_=id_,
            outs={**props, "target_host": remote.get("hostname", props["target_host"]), "replication_ids": ids},
        )

    def delete(self, _id: str, props: dict) -> None:
        src = _client(props, "source")
        for rep_id in props.get("replication_ids") or []:
            src.cancel_replication(rep_id)
        src.delete_remote(props["target_name"])


@dataclass
class XdcrEndpoint:
    """One cluster as XDCR sees it."""

    name: str  # reference name on the peer, e.g. "wojak-aws"
    host: pulumi.Input[str]  # host:8091 of a data node, private DNS
    username: pulumi.Input[str]
    password: pulumi.Input[str]  # secret


@dataclass
class XdcrReplicationArgs:
    source: XdcrEndpoint
    target: XdcrEndpoint
    buckets: Sequence[str]
    wait_seconds: int = 900  # a new cluster needs minutes to initialise
    scheme: str = "http"


class XdcrReplication(pulumi.dynamic.Resource, module="couchbase", name="XdcrReplication"):
    """One direction of XDCR (source cluster -> target cluster), for the given buckets."""

    remote_uuid: pulumi.Output[str]
    replication_ids: pulumi.Output[list]

    def __init__(self, name: str, args: XdcrReplicationArgs, opts: Optional[pulumi.ResourceOptions] = None):
        props = {
            "source_name": args.source.name,  # lets the policy pack pair the two directions
            "source_host": args.source.host,
            "source_username": args.source.username,
            "source_password": pulumi.Output.secret(args.source.password),
            "target_name": args.target.name,
            "target_host": args.target.host,
            "target_username": args.target.username,
            "target_password": pulumi.Output.secret(args.target.password),
            "buckets": list(args.buckets),
            "wait_seconds": args.wait_seconds,
            "scheme": args.scheme,
            "remote_uuid": None,
            "replication_ids": None,
        }
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=list(SECRET_KEYS))
        )
        super().__init__(XdcrProvider(), name, props, opts)


@dataclass
class XdcrArgs:
    a: XdcrEndpoint
    b: XdcrEndpoint
    buckets: Sequence[str]


class Xdcr(pulumi.ComponentResource):
    """Bidirectional XDCR: a -> b and b -> a."""

    def __init__(self, name: str, args: XdcrArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("wojak:couchbase:Xdcr", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.forward = XdcrReplication(
            f"{name}-{args.a.name}-to-{args.b.name}", XdcrReplicationArgs(args.a, args.b, args.buckets), child
        )
        self.backward = XdcrReplication(
            f"{name}-{args.b.name}-to-{args.a.name}", XdcrReplicationArgs(args.b, args.a, args.buckets), child
        )
        self.register_outputs(
            {"forward": self.forward.replication_ids, "backward": self.backward.replication_ids}
        )
