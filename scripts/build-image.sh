#!/usr/bin/env bash
# Build Ferry's image from the Dockerfile with buildah, on a Debian base made here.
#
# No image registry is reachable from these machines, so the Dockerfile's default base (a pinned
# python:3.11-slim-bookworm digest) cannot be pulled. Instead debootstrap makes a minimal Debian
# bookworm root filesystem with Python 3.11 from Debian's package mirror (the same Python as the
# default base), `podman import` turns it into a local image, and the build uses it through the
# Dockerfile's BASE_IMAGE build argument. Dependencies still come from requirements.lock, with
# hashes, from PyPI.
#
# Usage: scripts/build-image.sh          -> prints the image reference (localhost/ferry:<version>)
# Env:   FERRY_IMAGE (default localhost/ferry:<version from pyproject.toml>),
#        FERRY_CACHE_DIR (default ~/.cache/ferry; the base root filesystem is kept there),
#        STORAGE_DRIVER (default vfs: works without overlay support, e.g. inside a container)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FERRY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE=localhost/ferry-base:$SUITE
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)
IMAGE="${FERRY_IMAGE:-localhost/ferry:$version}"
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"

fail() { echo "build-image: $*" >&2; exit 1; }

missing=()
# runc: the smoke test runs the container with it (crun refuses hybrid cgroup hierarchies).
for tool in buildah podman debootstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get here: install them with your package manager"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "build-image: installing ${missing[*]} from Debian's packages..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    buildah podman debootstrap runc crun >/dev/null
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/image.lock"
flock -w 3600 9 || fail "timed out after 3600s waiting for another build holding $CACHE/image.lock"

if ! podman image exists "$BASE"; then
  rootfs="$CACHE/base-$SUITE/rootfs"
  if [[ ! -f "$CACHE/base-$SUITE/rootfs.tar" ]]; then
    start=$(date +%s)
    echo "build-image: debootstrap $SUITE with python3 (minutes)..." >&2
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/base-$SUITE/debootstrap.log" 2>&1 \
      || fail "debootstrap failed: see $CACHE/base-$SUITE/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$CACHE/base-$SUITE/rootfs.tar.tmp" .
    mv "$CACHE/base-$SUITE/rootfs.tar.tmp" "$CACHE/base-$SUITE/rootfs.tar"
    rm -rf "$rootfs"
    echo "build-image: base root filesystem in $(( $(date +%s) - start ))s" >&2
  fi
  podman import "$CACHE/base-$SUITE/rootfs.tar" "$BASE" >/dev/null || fail "podman import of the base failed"
fi

start=$(date +%s)
echo "build-image: buildah bud -> $IMAGE (base $BASE)..." >&2
# The CA bundle this machine's pip trusts (PyPI may be reached through a TLS-inspecting proxy),
# lent to the dependency step as a build secret and not kept in the image.
ca="${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}"
[[ -s "$ca" ]] || ca=/etc/ssl/certs/ca-certificates.crt
secret=()
[[ -s "$ca" ]] && secret=(--secret "id=ca,src=$ca")
buildah bud --isolation chroot --network host --layers "${secret[@]}" \
  --build-arg "BASE_IMAGE=$BASE" -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO" >&2 \
  || fail "buildah bud failed (see above)"
echo "build-image: built $IMAGE in $(( $(date +%s) - start ))s" >&2
echo "$IMAGE"
