"""`wojak plan STACK`: the offline table and its cost estimate."""

from __future__ import annotations

import io

import pytest

from infra import plan
from infra.simulate import STACKS_DIR


def run(stack: str) -> tuple[int, str]:
    out = io.StringIO()
    rc = plan.main(stack, out=out)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def multicloud_plan():
    return run("multicloud")


def test_plan_prints_every_role_by_cloud_and_lifecycle(multicloud_plan):
    rc, text = multicloud_plan
    assert rc == 0
    rows = [line.split() for line in text.splitlines() if line.startswith(("aws ", "gcp "))]
    seen = {(r[0], r[1], r[2]) for r in rows}
    for cloud in ("aws", "gcp"):
        assert (cloud, "couchbase-data", "on-demand") in seen
        assert (cloud, "couchbase-query", "spot") in seen
        assert (cloud, "app", "spot") in seen
        assert (cloud, "couchbase-data", "volume") in seen


def test_plan_prices_spot_below_on_demand_and_flags_examples(multicloud_plan):
    _, text = multicloud_plan
    (asg,) = [line for line in text.splitlines() if "aws-app-asg" in line]
    spot, on_demand = (float(x.rstrip("*").replace(",", "")) for x in asg.split()[-2:])
    assert 0 < spot < on_demand
    assert "*" in asg and "example price" in text and "2026-01-15" in text
    assert "total:" in text and "spot saves" in text


def test_plan_uses_the_table_it_is_given(tmp_path):
    for name in ("Pulumi.aws.yaml",):
        (tmp_path / name).write_text((STACKS_DIR / name).read_text())
    (tmp_path / "prices.yaml").write_text("currency: USD\nhoursPerMonth: 100\naws: {}\n")
    out = io.StringIO()
    assert plan.main("aws", stacks_dir=tmp_path, out=out) == 0
    text = out.getvalue()
    assert "no price in stacks/prices.yaml for:" in text and "aws-cb-data-0" in text


def test_plan_for_an_unknown_stack_fails_cleanly(capsys):
    rc, _ = run("does-not-exist")
    assert rc == 2 and "Pulumi.does-not-exist.yaml" in capsys.readouterr().err


def test_price_table_marks_every_entry_as_a_dated_example():
    import yaml

    table = yaml.safe_load((STACKS_DIR / "prices.yaml").read_text())
    for cloud in ("aws", "gcp"):
        for region in table[cloud].values():
            for section in region.values():
                for key, entry in section.items():
                    assert entry["example"] is True and entry["date"], f"{cloud}/{key}"
