"""Repository hygiene that keeps the docs honest and the repo clean."""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import msgspec

from engine.config import Config, load

ROOT = Path(__file__).resolve().parent.parent


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def test_example_config_when_loaded_then_equals_the_defaults():
    assert msgspec.structs.asdict(load(ROOT / "wojak.example.toml")) == msgspec.structs.asdict(Config())


def test_ci_when_run_then_calls_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev test" in readme and "./dev local" in readme
    assert re.search(r"^exec \./dev test$", ci, re.M)


def test_repo_when_scanned_then_names_no_registry_host_machine_path_or_key():
    forbidden = [re.compile(p) for p in (
        r"/work/" + "main", r"/opt/" + "pypi", "pypi" + r"\.org", "pythonhosted" + r"\.org",
        "deb" + r"\.debian\.org", "registry" + r"\.npmjs", r"/root/" + r"\.pyenv",
        r"-----BEGIN [A-Z ]*PRIVATE" + " KEY-----", r"AKIA[0-9A-Z]{16}")]
    hits = []
    for path in tracked():
        if path.suffix in (".png", ".jpg", ".db") or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="ignore")
        hits += [f"{path.relative_to(ROOT)}: {p.pattern}" for p in forbidden if p.search(text)]
    assert not hits, hits


def test_every_module_when_parsed_then_starts_with_a_docstring():
    missing = []
    for path in tracked("engine", "sidecars", "infra", "wojak", "bench"):
        if path.suffix != ".py" or path.name == "__main__.py" and path.stat().st_size < 200:
            continue
        tree = ast.parse(path.read_text())
        if tree.body and ast.get_docstring(tree) is None:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, missing
