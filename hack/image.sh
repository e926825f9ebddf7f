#!/usr/bin/env bash
# Build the operator's image here, with no registry (`make image`; the deploy test's fixture runs it):
#   1. a Ray base image standing in for rayproject/ray:2.60.0-py311, made from Debian's own packages: debootstrap
#      bookworm (Python 3.11, as the Ray image), a virtualenv with ray[default] 2.60.0 owned by the user `ray`
#      (uid 1000, group users: the Ray image's), `USER ray`; cached, built once;
#   2. kuberay/Dockerfile itself on top of it: `--build-arg RAY_IMAGE=<the local base>`, the one change.
# Nothing inside a build fetches anything: pip installs only from a wheelhouse downloaded here first (with the
# host's pip and its index) and mounted into the build at /wheels, as the base's /etc/pip.conf says (buildah's
# chroot isolation cannot take the network away: `--network none` needs runc's).
# Each image is saved as an OCI archive in ~/.cache/kubechain/images; the app image's tag is a hash of what goes
# into it, so a changed checkout builds anew.
# Prints the app image's archive path. Needs root (buildah's chroot isolation).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
log() { echo "[image] $*" >&2; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive

RAY_VERSION=2.60.0
BASE_REVISION=2  # of the recipe below: a change to it is a new base
BASE_IMAGE="localhost/kubechain/ray-base:$RAY_VERSION-py311-$BASE_REVISION"
MCP_PIP_PACKAGES="mcp-server-time"  # the Dockerfile's default

need=()
for cmd in buildah:buildah debootstrap:debootstrap; do command -v "${cmd%%:*}" >/dev/null || need+=("${cmd##*:}"); done
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]} (apt)"
  sudo_ apt-get update -qq >&2
  sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

CACHE="${KUBECHAIN_CACHE:-$HOME/.cache/kubechain}/images"
mkdir -p "$CACHE"
archive() { echo "$CACHE/$(echo "$1" | tr '/:' '__').tar"; }

# What the app image is made of: a change to any of it is a new image
app_hash="$(cd "$REPO" && find kuberay/Dockerfile pyproject.toml README.md kubechain actors crds -type f \
  ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
APP_IMAGE="localhost/kubechain:$app_hash"
if [ -s "$(archive "$APP_IMAGE")" ]; then archive "$APP_IMAGE"; exit 0; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/kubechain-image.XXXXXX")"
trap 'buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true
      rm -rf "$work"' EXIT
bah() { buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs "$@"; }
save() { bah push -q "$1" "oci-archive:$2.part:$1" && mv "$2.part" "$2"; }

# The wheelhouse: every requirement of the base and of `pip install .` (its build backend too: build isolation)
wheels="$CACHE/wheelhouse"
mkdir -p "$wheels"
reqs="$work/requirements.txt"
PYTHON="${PYTHON:-python3}"  # one with pip (the Makefile passes the dev virtualenv's)
"$PYTHON" - "$REPO/pyproject.toml" >"$reqs" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join([*project["project"]["dependencies"], *project["build-system"]["requires"], "wheel"]))
EOF
echo "ray[default]==$RAY_VERSION" >>"$reqs"
for pkg in $MCP_PIP_PACKAGES; do echo "$pkg" >>"$reqs"; done
log "wheelhouse: $(wc -l <"$reqs") requirements"
"$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform linux_x86_64 -d "$wheels" -r "$reqs" >"$work/pip.log" 2>&1 \
  || { grep -v " is ignored: " "$work/pip.log" | tail -20 >&2; log "pip download failed"; exit 1; }

base_archive="$(archive "$BASE_IMAGE")"
if [ ! -s "$base_archive" ]; then
  log "building $BASE_IMAGE (debootstrap bookworm, then ray $RAY_VERSION)"
  rootfs="$work/rootfs"
  sudo_ debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,procps \
    bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  ctr="$(bah from scratch)"
  bah copy "$ctr" "$rootfs" / >/dev/null
  rm -rf "$rootfs"
  printf '# Builds install from the wheelhouse hack/image.sh mounts here; nothing is fetched at run time.\n[global]\nno-index = true\nfind-links = /wheels\n' \
    >"$work/pip.conf"
  bah copy "$ctr" "$work/pip.conf" /etc/pip.conf >/dev/null
  # KubeRay runs `ray start` in a login shell (`bash -lc`), where Debian's /etc/profile resets PATH (Ubuntu's, under
  # the Ray image, does not): put the virtualenv back first
  echo 'export PATH=/home/ray/venv/bin:$PATH' >"$work/ray-venv.sh"
  bah copy "$ctr" "$work/ray-venv.sh" /etc/profile.d/ray-venv.sh >/dev/null
  run() { bah run --isolation chroot -v "$wheels:/wheels:ro" "$ctr" -- "$@"; }
  run useradd --create-home --uid 1000 --gid users --shell /bin/bash ray
  run su ray -c "python3 -m venv /home/ray/venv && /home/ray/venv/bin/pip install -q --no-cache-dir 'ray[default]==$RAY_VERSION'"
  bah config --user ray --workingdir /home/ray --env HOME=/home/ray \
    --env PATH=/home/ray/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["bash"]' "$ctr"
  bah commit -q "$ctr" "$BASE_IMAGE" >/dev/null
  save "$BASE_IMAGE" "$base_archive"
else
  bah pull -q "oci-archive:$base_archive" >/dev/null
fi

log "building $APP_IMAGE (kuberay/Dockerfile on $BASE_IMAGE)"
bah bud -q --isolation chroot --layers=false -v "$wheels:/wheels:ro" \
  --build-arg RAY_IMAGE="$BASE_IMAGE" --build-arg MCP_PIP_PACKAGES="$MCP_PIP_PACKAGES" \
  -t "$APP_IMAGE" -f "$REPO/kuberay/Dockerfile" "$REPO" >&2
# the previous checkout's app images: one is enough to keep
find "$CACHE" -maxdepth 1 -name 'localhost_kubechain_????????????.tar' ! -name "$(basename "$(archive "$APP_IMAGE")")" -delete
save "$APP_IMAGE" "$(archive "$APP_IMAGE")"
archive "$APP_IMAGE"
