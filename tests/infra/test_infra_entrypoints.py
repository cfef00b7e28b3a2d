"""Entry points: imports have no side effects, and `infra/__main__.py` runs as Pulumi runs it."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pulumi
from pulumi.runtime import settings

from infra.simulate import PROJECT, RecordingMocks, load_stack_config

REPO = Path(__file__).resolve().parents[2]


def test_importing_every_module_creates_nothing():
    code = (
        "import pkgutil, infra, importlib\n"
        "mods = [m.name for m in pkgutil.walk_packages(infra.__path__, 'infra.') if not m.name.endswith('__main__')]\n"
        "[importlib.import_module(m) for m in mods]\n"
        "import pulumi.runtime.settings as s\n"
        "assert s.get_monitor() is None\n"
        "print(len(mods))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) >= 20


def test_main_module_runs_the_program_like_the_pulumi_host():
    config, secrets = load_stack_config("aws")
    mocks = RecordingMocks("aws")
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config, secrets)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="aws", preview=False)

    @pulumi.runtime.test
    def run():
        # the language host runs the `main:` directory as a script
        runpy.run_path(str(REPO / "infra"), run_name="__main__")

    run()
    assert any(r.typ == "aws:ec2/instance:Instance" for r in mocks.resources)


def test_pulumi_project_file_points_at_the_program_and_stacks():
    import yaml

    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["name"] == "wojak" and project["runtime"] == "python"
    assert project["main"].rstrip("/") == "infra" and project["stackConfigDir"].rstrip("/") == "stacks"
    for stack in ("aws", "gcp", "multicloud"):
        assert (REPO / "stacks" / f"Pulumi.{stack}.yaml").exists()


def test_ci_workflow_previews_every_stack_with_the_policy_pack():
    import yaml

    wf = yaml.safe_load((REPO / ".github" / "workflows" / "preview.yml").read_text())
    (job,) = wf["jobs"].values()
    assert sorted(job["strategy"]["matrix"]["stack"]) == ["aws", "gcp", "multicloud"]
    steps = [s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert steps and steps[-1]["with"]["command"] == "preview"
    assert steps[-1]["with"]["policyPacks"] == "infra/policy"
