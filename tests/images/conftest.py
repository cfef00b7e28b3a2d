"""Real podman for the image tests: a private podman configuration, a Debian base image made with
debootstrap (Docker Hub is unreachable here), and the wojak image built from it with images/build.sh.

Everything slow is cached in .ci-cache/images/ under the repository (git-ignored by its own
.gitignore): the base rootfs tarball and podman's image store, so a second run only rebuilds the
layers whose sources changed. The Debian mirror is read from this machine's apt sources at run time.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".ci-cache" / "images"
BASE_TAG = "localhost/wojak-test-base:bookworm"
IMAGE_TAG = "localhost/wojak:test"
SUITE = "bookworm"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{tmp}"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{graph}"
runroot = "{run}"
"""


def _missing(tool: str) -> None:
    why = (f"{tool} is not installed (apt-get install -y podman buildah runc debootstrap); "
           "the image tests need real podman")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses for the release suite (never written in the repo)."""
    found: list[str] = []
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not f.is_file() or f.suffix not in (".list", ".sources"):
            continue
        text = f.read_text(errors="replace")
        if f.suffix == ".list":
            for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
                if m.group(2) == SUITE:
                    found.append(m.group(1))
        else:
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "").split():
                    found += fields.get("URIs", "").split()
    debian = [u for u in found if "security" not in u]
    if not debian:
        pytest.fail(f"no Debian {SUITE} mirror in /etc/apt/sources.list*: cannot debootstrap a base image")
    return debian[0]


def _run(cmd: list[str], env: dict[str, str], timeout: float, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory) -> dict[str, str]:
    """os.environ plus CONTAINERS_CONF / CONTAINERS_STORAGE_CONF for a private, cached podman store.
    Also set in os.environ for the session: testinfra's podman backend runs `podman` with it."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            _missing(tool)
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = REPO / ".ci-cache" / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# build caches of the test suites; never committed\n*\n")
    conf = tmp_path_factory.mktemp("podman-conf")
    (conf / "containers.conf").write_text(CONTAINERS_CONF.format(tmp=CACHE / "podman-tmp"))
    # The store (and libpod's database, which records these paths) must stay put between runs.
    (conf / "storage.conf").write_text(STORAGE_CONF.format(graph=CACHE / "storage", run=CACHE / "run"))
    added = {"CONTAINERS_CONF": str(conf / "containers.conf"),
             "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf")}
    saved = {k: os.environ.get(k) for k in added}
    os.environ.update(added)
    yield dict(os.environ)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _image_exists(tag: str, env: dict[str, str]) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], env=env).returncode == 0


@pytest.fixture(scope="session")
def base_image(podman_env) -> str:
    """A Debian bookworm image with python3, venv and pip: debootstrap once, cached as a tarball."""
    if _image_exists(BASE_TAG, podman_env):
        return BASE_TAG
    tarball = CACHE / f"rootfs-{SUITE}.tar"
    if not tarball.exists():
        if shutil.which("debootstrap") is None:
            _missing("debootstrap")
        rootfs = CACHE / f"rootfs-{SUITE}.tmp"
        shutil.rmtree(rootfs, ignore_errors=True)
        _run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,ca-certificates",
              SUITE, str(rootfs), debian_mirror()], podman_env, timeout=900)
        for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt",
                     "var/lib/apt/lists"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], podman_env, timeout=300)
        partial.rename(tarball)  # a crash mid-way never leaves a truncated cache
        shutil.rmtree(rootfs, ignore_errors=True)
    _run(["podman", "import", "--change", 'CMD ["/bin/bash"]', str(tarball), BASE_TAG], podman_env, timeout=300)
    return BASE_TAG


@pytest.fixture(scope="session")
def wojak_image(podman_env, base_image) -> str:
    """The real image, built by images/build.sh (podman's layer cache makes unchanged rebuilds quick)."""
    env = dict(podman_env, BASE_IMAGE=base_image, BUILD_NETWORK="host")
    _bound_cache(env)
    before = _image_id(IMAGE_TAG, env)
    started = time.monotonic()
    p = subprocess.run([str(REPO / "images" / "build.sh"), IMAGE_TAG], env=env, capture_output=True, text=True,
                       timeout=1500)
    if p.returncode != 0:
        pytest.fail(f"images/build.sh failed ({p.returncode}) after {time.monotonic() - started:.0f}s:\n"
                    f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    if before and before != _image_id(IMAGE_TAG, env):
        # The previous build is untagged now: with vfs it is a full filesystem copy, drop it.
        subprocess.run(["podman", "rmi", before], env=env, capture_output=True)
    return IMAGE_TAG


def _image_id(tag: str, env: dict[str, str]) -> str:
    p = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag], env=env, capture_output=True,
                       text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


MAX_STORE_BYTES = 12 << 30


def _bound_cache(env: dict[str, str]) -> None:
    """vfs keeps a full copy per layer, and each source change adds build layers: past the bound, start
    the store afresh (the base image comes back from the cached rootfs tarball in seconds)."""
    store = CACHE / "storage"
    du = subprocess.run(["du", "-sb", str(store)], capture_output=True, text=True) if store.exists() else None
    used = int(du.stdout.split()[0]) if du and du.returncode == 0 else 0
    if used > MAX_STORE_BYTES:
        subprocess.run(["podman", "image", "prune", "--all", "--force"], env=env, capture_output=True)
        if not _image_exists(BASE_TAG, env):
            _run(["podman", "import", "--change", 'CMD ["/bin/bash"]', str(CACHE / f"rootfs-{SUITE}.tar"),
                  BASE_TAG], env, timeout=300)
