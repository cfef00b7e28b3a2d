"""Run the program offline under Pulumi mocks and record every resource it declares.

No CLI, no cloud, no credentials: `pulumi.runtime.set_mocks` stands in for the engine. Used by the
tests (`tests/infra`) and by `wojak plan`. The stack file's `config` block is loaded the way the
CLI would pass it; values set with `--secret` (and required secrets that a fresh checkout does not
have) are replaced by an obviously fake placeholder, marked secret.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import pulumi
import yaml
from pulumi.runtime import settings as _settings

from infra.config import NAMESPACE

PROJECT = "wojak"
REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO_ROOT / "stacks"
MOCK_SECRET = "mock-secret-not-a-real-value"
STACK_REFERENCE = "pulumi:pulumi:StackReference"


@dataclass(frozen=True)
class Declared:
    """One declared resource: type, name and its inputs in wire (camelCase) form."""

    urn: str
    typ: str
    name: str
    inputs: Mapping[str, Any]

    @property
    def is_provider(self) -> bool:
        return self.typ.startswith("pulumi:providers:")


@dataclass
class Simulation:
    stack: str
    resources: list[Declared]
    calls: list[tuple[str, dict, dict]]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.typ == typ]


def stack_names(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in stacks_dir.glob("Pulumi.*.yaml"))


def load_stack_config(stack: str, stacks_dir: Path = STACKS_DIR) -> tuple[dict[str, str], list[str]]:
    """The stack file's config as the CLI passes it: full keys, strings, objects as JSON."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = ", ".join(stack_names(stacks_dir)) or "none"
        raise FileNotFoundError(f"no stack file {path.name} in {stacks_dir} (stacks: {known})")
    data = yaml.safe_load(path.read_text()) or {}
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (data.get("config") or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[full] = MOCK_SECRET  # ciphertext only the CLI can decrypt
            secret_keys.append(full)
        elif isinstance(value, str):
            config[full] = value
        else:
            config[full] = json.dumps(value)
    # stand in for the secrets a user sets with `pulumi config set --secret`
    needed = ["couchbasePassword"]
    app = json.loads(config.get(f"{NAMESPACE}:app", "{}"))
    if isinstance(app, dict) and app.get("transport") == "curve":
        needed += ["curveServerSecret", "curveClientSecret"]
    for key in needed:
        full = f"{NAMESPACE}:{key}"
        if full not in config:
            config[full] = MOCK_SECRET
            secret_keys.append(full)
    return config, secret_keys


def _fake_ip(name: str) -> str:
    h = hashlib.sha256(name.encode()).digest()
    return f"10.{h[0]}.{h[1]}.{h[2] or 1}"


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like a provider would (ids, ARNs, IPs) and records every resource and call."""

    def __init__(self, stack: str, peer_outputs: Optional[dict] = None):
        self.stack = stack
        self.peer_outputs = peer_outputs or {}
        self.resources: list[Declared] = []
        self.calls: list[tuple[str, dict, dict]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        urn = f"urn:pulumi:{self.stack}::{PROJECT}::{args.typ}::{args.name}"
        self.resources.append(Declared(urn, args.typ, args.name, dict(args.inputs)))
        if args.typ == STACK_REFERENCE:
            return f"{args.name}-id", {
                "name": args.inputs.get("name"),
                "outputs": self.peer_outputs,
                "secretOutputNames": ["xdcrPassword"],
            }
        outs = dict(args.inputs)
        link = f"mock://{args.typ}/{args.name}"
        outs.setdefault("name", args.name)
        outs.update(
            arn=f"arn:aws:mock:::{args.name}",
            selfLink=link,
            selfLinkUnique=link,
            latestVersion=1,
            zoneId=f"Z{args.name.upper()}",
            privateIp=_fake_ip(args.name),
            email=f"{args.name}@mock.invalid",
        )
        if "networkInterfaces" in args.inputs:
            outs["networkInterfaces"] = [
                {**nic, "networkIp": _fake_ip(args.name)} for nic in args.inputs["networkInterfaces"] or []
            ]
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs):
        result: dict = {}
        if args.token == "aws:ec2/getAmi:getAmi":
            names = [v for f in args.args.get("filters", []) if f["name"] == "name" for v in f["values"]]
            stem = names[0].rstrip("*-") if names else "unknown"
            result = {"id": f"ami-mock-{stem}", "name": f"{stem}-v0.0.0-mock", "owners": args.args.get("owners")}
        elif args.token == "gcp:compute/getImage:getImage":
            proj, fam = args.args.get("project"), args.args.get("family")
            result = {"selfLink": f"projects/{proj}/global/images/{fam}-mock", "name": f"{fam}-mock"}
        self.calls.append((args.token, dict(args.args), result))
        return result


SECRET_OUTPUTS = ("xdcrPassword",)


def simulate(
    stack: str,
    stacks_dir: Path = STACKS_DIR,
    extra_config: Optional[Mapping[str, str]] = None,
    extra_secret_keys: tuple[str, ...] = (),
    peer_outputs: Optional[dict] = None,
) -> Simulation:
    """Run the whole program for `stack` under mocks; return every declared resource."""
    from infra import config as cfg
    from infra import program

    config, secret_keys = load_stack_config(stack, stacks_dir)
    config.update(extra_config or {})
    secret_keys += list(extra_secret_keys)
    if peer_outputs is None:
        peer_outputs = {
            "xdcr": {"name": "peer", "host": "cb-data-0.peer.wojak.internal:8091", "username": "Administrator"},
            "xdcrPassword": MOCK_SECRET,
        }
    mocks = RecordingMocks(stack, peer_outputs)
    # a fresh root Stack resource per run, so several stacks can be simulated in one process
    _settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    captured: dict[str, Any] = {}

    @pulumi.runtime.test
    def run():
        outputs = program.build(cfg.load())
        public = {k: v for k, v in outputs.items() if k not in SECRET_OUTPUTS}
        return pulumi.Output.from_input(public).apply(captured.update)

    run()
    return Simulation(stack=stack, resources=mocks.resources, calls=mocks.calls, outputs=captured)
