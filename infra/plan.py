"""`wojak plan STACK`: what `pulumi up` would create and what it would cost, offline.

Runs the program under mocks (`infra.simulate`), then prints the compute (VMs, spot groups, pods)
and data volumes as a table by cloud, role and lifecycle, priced from `stacks/prices.yaml`. Prices
marked `example: true` are flagged with `*` and their date, so a guess never passes for a quote.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

import yaml

from infra.policy.rules import (
    AWS_ASG,
    AWS_INSTANCE,
    GCP_INSTANCE,
    GCP_TEMPLATE,
    K8S_DEPLOYMENT,
    tags_of,
)
from infra.simulate import STACKS_DIR, Simulation, simulate
from infra.tags import SPOT

GCP_MIG = "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"
GCP_DISK = "gcp:compute/disk:Disk"


@dataclass
class Row:
    cloud: str
    role: str
    lifecycle: str
    resource: str
    kind: str  # instance type(s), disk type, "pod"
    count: int
    monthly: Optional[float]  # at the row's lifecycle
    monthly_on_demand: Optional[float]  # what the same would cost on-demand
    example: bool


class Prices:
    def __init__(self, table: dict):
        self.table = table
        self.hours = float(table.get("hoursPerMonth", 730))
        self.dates: set[str] = set()

    def _entry(self, cloud: str, region: str, section: str, key: str) -> Optional[dict]:
        entry = (((self.table.get(cloud) or {}).get(region) or {}).get(section) or {}).get(key)
        if entry and entry.get("example"):
            self.dates.add(str(entry.get("date", "undated")))
        return entry

    def instance(self, cloud: str, region: str, types: list[str], lifecycle: str) -> tuple[Optional[float], Optional[float], bool]:
        """Monthly (lifecycle price, on-demand price, example?) averaged over the group's types."""
        entries = [self._entry(cloud, region, "instances", t) for t in types]
        if not entries or any(e is None for e in entries):
            return None, None, False
        od = sum(e["onDemand"] for e in entries) / len(entries) * self.hours  # type: ignore[index]
        sp = sum(e["spot"] for e in entries) / len(entries) * self.hours  # type: ignore[index]
        return (sp if lifecycle == SPOT else od), od, any(e.get("example") for e in entries)  # type: ignore[union-attr]

    def storage(self, cloud: str, region: str, kind: str, gb: float) -> tuple[Optional[float], bool]:
        e = self._entry(cloud, region, "storage", kind)
        if e is None:
            return None, False
        return e["perGbMonth"] * gb, bool(e.get("example"))


def _regions(sim: Simulation) -> dict[str, str]:
    out = {}
    for r in sim.resources:
        if r.typ in ("pulumi:providers:aws", "pulumi:providers:gcp"):
            out[r.typ.split(":")[-1]] = r.inputs.get("region", "")
    return out


def rows_for(sim: Simulation, prices: Prices) -> list[Row]:
    regions = _regions(sim)
    templates = {f"mock://{r.typ}/{r.name}": r for r in sim.of_type(GCP_TEMPLATE)}
    rows: list[Row] = []

    def add(cloud, r, tags, kind_types, count):
        life = tags.get("lifecycle", "?")
        m, od, ex = prices.instance(cloud, regions.get(cloud, ""), kind_types, life)
        rows.append(
            Row(cloud, tags.get("role", "?"), life, r.name, "/".join(kind_types), count,
                None if m is None else m * count, None if od is None else od * count, ex)
        )

    for r in sim.resources:
        p = r.inputs
        if r.typ == AWS_INSTANCE:
            tags = tags_of(r.typ, p)
            add("aws", r, tags, [p["instanceType"]], 1)
            for dev in p.get("ebsBlockDevices") or []:
                cost, ex = prices.storage("aws", regions.get("aws", ""), dev.get("volumeType", "gp3"), dev.get("volumeSize", 0))
                rows.append(Row("aws", tags.get("role", "?"), "volume", f"{r.name}:{dev['deviceName']}",
                                f"{dev.get('volumeType')} {int(dev.get('volumeSize') or 0)}GB", 1, cost, cost, ex))
        elif r.typ == AWS_ASG:
            types = [o["instanceType"] for o in p["mixedInstancesPolicy"]["launchTemplate"]["overrides"]]
            add("aws", r, tags_of(r.typ, p), types, int(p.get("desiredCapacity") or 0))
        elif r.typ == GCP_INSTANCE:
            add("gcp", r, tags_of(r.typ, p), [p["machineType"]], 1)
        elif r.typ == GCP_MIG:
            tpl = templates.get(p["versions"][0]["instanceTemplate"])
            if tpl is not None:
                add("gcp", r, tags_of(tpl.typ, tpl.inputs), [tpl.inputs["machineType"]], int(p.get("targetSize") or 0))
        elif r.typ == GCP_DISK:
            labels = tags_of(r.typ, p)
            cost, ex = prices.storage("gcp", regions.get("gcp", ""), p.get("type", ""), p.get("size", 0))
            rows.append(Row("gcp", labels.get("role", "?"), "volume", r.name, f"{p.get('type')} {int(p.get('size') or 0)}GB", 1, cost, cost, ex))
        elif r.typ == K8S_DEPLOYMENT:
            tags = tags_of(r.typ, p)
            rows.append(Row("k8s", tags.get("role", "?"), tags.get("lifecycle", "?"), r.name, "pod (on the cluster's spot nodes)",
                            int((p.get("spec") or {}).get("replicas") or 0), None, None, False))
    return sorted(rows, key=lambda x: (x.cloud, x.role, x.lifecycle, x.resource))


def _money(v: Optional[float], example: bool) -> str:
    return "?" if v is None else f"{v:,.2f}{'*' if example else ''}"


def render(stack: str, rows: list[Row], prices: Prices, out: TextIO) -> None:
    cur = prices.table.get("currency", "USD")
    head = ("cloud", "role", "lifecycle", "resource", "type", "count", f"{cur}/month", f"if on-demand")
    body = [
        (r.cloud, r.role, r.lifecycle, r.resource, r.kind, str(r.count), _money(r.monthly, r.example),
         _money(r.monthly_on_demand, r.example))
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)] if body else [len(h) for h in head]
    line = lambda cells: "  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    print(f"wojak plan: stack {stack} (offline, under mocks; nothing was created)", file=out)
    print(line(head), file=out)
    print(line(tuple("-" * w for w in widths)), file=out)
    for cells in body:
        print(line(cells), file=out)
    priced = [r for r in rows if r.monthly is not None]
    total = sum(r.monthly for r in priced)  # type: ignore[misc]
    total_od = sum(r.monthly_on_demand for r in priced if r.monthly_on_demand is not None)
    for cloud in sorted({r.cloud for r in priced}):
        sub = sum(r.monthly for r in priced if r.cloud == cloud)  # type: ignore[misc]
        print(f"subtotal {cloud}: {sub:,.2f} {cur}/month", file=out)
    print(f"total: {total:,.2f} {cur}/month (all on-demand: {total_od:,.2f}; spot saves {total_od - total:,.2f})", file=out)
    missing = [r.resource for r in rows if r.monthly is None and r.cloud != "k8s"]
    if missing:
        print(f"no price in stacks/prices.yaml for: {', '.join(missing)} (shown as ?)", file=out)
    if prices.dates:
        print(f"* example price from stacks/prices.yaml, dated {', '.join(sorted(prices.dates))}: "
              "not a quote, update the table", file=out)


def main(stack: str, stacks_dir: Path = STACKS_DIR, out: TextIO = sys.stdout) -> int:
    """Print the plan for `stack`; 0 on success, 2 when the stack or its config is invalid."""
    from infra.config import ConfigError

    try:
        sim = simulate(stack, stacks_dir=stacks_dir)
    except (FileNotFoundError, ConfigError) as exc:
        print(f"wojak plan: {exc}", file=sys.stderr)
        return 2
    prices_path = stacks_dir / "prices.yaml"
    table: dict[str, Any] = yaml.safe_load(prices_path.read_text()) if prices_path.exists() else {}
    prices = Prices(table or {})
    render(stack, rows_for(sim, prices), prices, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "aws"))
