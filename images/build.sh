#!/usr/bin/env bash
# Build the wojak image with podman from a clean context holding only what the package needs.
#
#   images/build.sh [TAG]                 TAG defaults to wojak:dev
#   BASE_IMAGE=localhost/debian-py:12 images/build.sh wojak:test
#
# Environment: BASE_IMAGE (default: the Dockerfile's python:3.11-slim-bookworm), TAG,
# BUILD_NETWORK (e.g. host; default podman's), PODMAN (default podman), PIP (how to ask this host's
# pip for its configuration; default python3 -m pip).
#
# pip inside the build reaches its package index the way this host's pip does: the host's pip
# settings (`pip config list`, including PIP_* variables) go in as a build secret (never a layer),
# and local paths they name (file:// indexes, find-links, cert, constraints) are bind-mounted
# read-only at the same place for the build only. Nothing about the host lands in the repository.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
TAG=${1:-${TAG:-wojak:dev}}
PODMAN=${PODMAN:-podman}
PIP=${PIP:-python3 -m pip}

work=$(mktemp -d "${TMPDIR:-/tmp}/wojak-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
ctx="$work/context"
mkdir "$ctx"

# The context: the package sources and the image files, nothing else (no .git, venv, data, keys).
tar -C "$repo" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.sock' --exclude='*.db' \
    --exclude='*.db-*' --exclude='wojak-data' -cf - pyproject.toml engine sidecars wojak bench infra \
    | tar -C "$ctx" -xf -
if [ -f "$repo/README.md" ]; then
    cp "$repo/README.md" "$ctx/README.md"
else
    # pyproject.toml names README.md as the long description; the image does not need its text.
    echo "Wojak: pre-trade risk gate and source sidecars for NSE F&O." > "$ctx/README.md"
fi
mkdir -p "$ctx/images"
cp "$here/Dockerfile" "$here/healthcheck.py" "$ctx/images/"

# The host's pip settings as an ini file, and the local paths they need.
pipconf="$work/pip.conf"   # outside the context: only the build secret carries it
mounts=()
{
    echo "[global]"
    $PIP config list 2>/dev/null | sed -n "s/^[^.]*\.\([a-z-]*\)='\(.*\)'$/\1 \2/p" | sort -u -k1,1 \
    | while read -r key value; do
        case "$key" in
            index-url|extra-index-url|find-links|trusted-host|cert|client-cert|constraint|timeout|default-timeout|retries|proxy|no-index|prefer-binary|only-binary)
                echo "$key = $value" ;;
        esac
    done
} > "$pipconf"
while read -r word; do
    path=${word#file://}
    path=${path%/}
    # A local "simple" index links to files beside it (../files/...): mount the index's root.
    case "$path" in */simple) path=${path%/simple} ;; esac
    case "$path" in
        /*) [ -e "$path" ] && mounts+=(-v "$path:$path:ro") ;;
    esac
done < <(sed -n 's/^[a-z-]* = //p' "$pipconf" | tr ' ' '\n' | sort -u)

args=(build --format docker -f "$ctx/images/Dockerfile" -t "$TAG" --secret "id=pipconf,src=$pipconf" "${mounts[@]}")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${BUILD_NETWORK:-}" ] && args+=(--network "$BUILD_NETWORK")
echo "+ $PODMAN ${args[*]} $ctx" >&2
"$PODMAN" "${args[@]}" "$ctx"
