#!/usr/bin/env bash
# Provision one real Kubernetes node for the local control plane (`make node`; harness/node.py runs it):
#   - containerd 1.6, runc, the CNI plugins, iptables, socat and buildah from apt;
#   - kubelet, kube-proxy, kube-scheduler and a static pause binary built from Debian's kubernetes source
#     (hack/k8s-binaries.sh --node: one pass, cached);
#   - the images the node runs, built here (no registry is reachable) as OCI archives in the same cache:
#     the pod sandbox's pause image and a busybox image (Debian's static busybox), which the harness imports into
#     its own containerd's k8s.io namespace, the one the kubelet's CRI uses.
# Prints the cache directory. Needs root (containerd, the kubelet and CNI do).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
log() { echo "[node] $*" >&2; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive

# Versions are in the image names: a change here builds new archives instead of reusing stale ones
PAUSE_IMAGE=localhost/kubechain/pause:3.4
BUSYBOX_IMAGE=localhost/kubechain/busybox:1.35

need=()
for cmd in containerd:containerd runc:runc ctr:containerd buildah:buildah iptables:iptables conntrack:conntrack \
           socat:socat nsenter:util-linux /usr/bin/busybox:busybox-static /usr/lib/cni/bridge:containernetworking-plugins; do
  command -v "${cmd%%:*}" >/dev/null || [ -x "${cmd%%:*}" ] || need+=("${cmd##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]} (apt)"
  sudo_ apt-get update -qq >&2
  sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

CACHE="$("$HERE/k8s-binaries.sh" --node)"
IMAGES="$CACHE/images"
mkdir -p "$IMAGES"

archive() { echo "$IMAGES/$(echo "$1" | tr '/:' '__').tar"; }

# buildah with its own vfs storage (no overlay mounts, nothing shared with other users of buildah on the machine)
work="$(mktemp -d "${TMPDIR:-/tmp}/kubechain-node-images.XXXXXX")"
trap 'buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true
      rm -rf "$work"' EXIT
bah() { buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs "$@"; }

# build IMAGE ROOTFS ENTRYPOINT-JSON CMD-JSON: a scratch image holding ROOTFS, saved as an OCI archive
build() {
  local image=$1 rootfs=$2 entrypoint=$3 cmd=$4 out; out="$(archive "$image")"
  [ -s "$out" ] && return 0
  log "building $image"
  local ctr; ctr="$(bah from scratch)"
  bah copy "$ctr" "$rootfs" / >/dev/null
  bah config --entrypoint "$entrypoint" --cmd "$cmd" --user 65532:65532 "$ctr"
  bah commit -q "$ctr" "$image" >/dev/null
  bah push -q "$image" "oci-archive:$out.part:$image"
  mv "$out.part" "$out"
}

pause_root="$work/pause-rootfs"
mkdir -p "$pause_root"
install -m 0755 "$CACHE/pause" "$pause_root/pause"
build "$PAUSE_IMAGE" "$pause_root" '["/pause"]' '[]'

# busybox: its applets as symlinks, a writable-nowhere root (tools get /tmp as a volume), users for non-root tools
bb_root="$work/busybox-rootfs"
mkdir -p "$bb_root/bin" "$bb_root/etc" "$bb_root/tmp"
install -m 0755 /usr/bin/busybox "$bb_root/bin/busybox"
for applet in $(/usr/bin/busybox --list); do [ -e "$bb_root/bin/$applet" ] || ln -s busybox "$bb_root/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
  > "$bb_root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\nnogroup:x:65534:\n' > "$bb_root/etc/group"
chmod 1777 "$bb_root/tmp"
build "$BUSYBOX_IMAGE" "$bb_root" '[]' '["sh"]'

echo "$CACHE"
