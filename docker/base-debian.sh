#!/usr/bin/env bash
# Build a base image for ./Dockerfile from Debian's archive and PyPI alone, for
# machines that cannot pull the official pytorch/pytorch base (no Docker Hub):
#
#   docker/base-debian.sh [TAG]          # default TAG: wm-base:bookworm-torch2.13.0-cpu
#   docker build --build-arg BASE=TAG -t wm-planning-server .
#
# 1. debootstrap --variant=minbase bookworm (python3, pip, venv, CA certificates),
#    imported as the image wm-base-rootfs:bookworm (kept: later runs skip this step);
# 2. docker/base-debian.Dockerfile on top: the local CA certificates of this machine
#    (/usr/local/share/ca-certificates), a venv on PATH, a CPU build of torch.
#
# Environment: DEBIAN_MIRROR (default: this machine's apt mirror, else deb.debian.org),
# TORCH_VERSION (default 2.13.0), TORCH_WHEEL (a torch CPU wheel for cp311 to use
# instead of downloading one; default: one found in pip's configured find-links).
# Needs root (debootstrap), debootstrap, and a running Docker daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TAG=${1:-wm-base:bookworm-torch${TORCH_VERSION}-cpu}
ROOTFS=wm-base-rootfs:bookworm
log() { echo "base-debian: $*" >&2; }

if ! docker image inspect "$ROOTFS" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { log "needs debootstrap (apt-get install debootstrap)"; exit 2; }
    mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources \
        2>/dev/null | head -1)}
    mirror=${mirror:-http://deb.debian.org/debian}
    root=$(mktemp -d /tmp/wm-base-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    log "debootstrap bookworm from $mirror (a few minutes, once)"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    # Debian's apt lists and caches only make the image larger.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$ROOTFS" >/dev/null
    rm -rf "$root"; trap - EXIT
    log "imported $ROOTFS"
fi

ctx=$(mktemp -d /tmp/wm-base-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/ca-certificates" "$ctx/wheels"
cp docker/base-debian.Dockerfile "$ctx/Dockerfile"
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] && cp "$crt" "$ctx/ca-certificates/"
done
wheel=${TORCH_WHEEL:-}
if [ -z "$wheel" ]; then
    for dir in $(pip config get global.find-links 2>/dev/null) /opt/wheels; do
        for w in "$dir"/torch-"$TORCH_VERSION"+cpu-cp311-cp311-manylinux*_x86_64.whl; do
            [ -f "$w" ] && { wheel=$w; break 2; }
        done
    done
fi
if [ -n "$wheel" ]; then
    log "torch from $wheel"
    ln "$wheel" "$ctx/wheels/" 2>/dev/null || cp "$wheel" "$ctx/wheels/"
else
    log "no local torch $TORCH_VERSION CPU wheel: downloading one from PyTorch's CPU index"
fi
# --network host: the daemon may run without a bridge (dockerd --bridge=none).
docker build -q --network host --build-arg ROOTFS="$ROOTFS" --build-arg TORCH_VERSION="$TORCH_VERSION" \
    -t "$TAG" "$ctx" >/dev/null
log "built $TAG"
echo "$TAG"
