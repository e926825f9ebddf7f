#!/usr/bin/env bash
# Provision etcd, kube-apiserver and kube-controller-manager for the local control plane
# (envtest-style: no kubelet, no Docker). Prints the directory that holds the binaries.
# With --node, also kubelet, kube-proxy, kube-scheduler (a node's pods need scheduling) and `pause` (the pod
# sandbox's process, static, from the package's build/pause/linux/pause.c) for hack/node.sh (`make node`), in one
# build pass with whatever else is missing, so a fresh machine untars and compiles the source package once.
#
# Order of preference: $KUBEBUILDER_ASSETS, binaries already on PATH, then a cached build from
# Debian's `kubernetes` source package (1.20.2, ~7 min on 2 cores for the control plane, done once per machine).
set -euo pipefail

CACHE="${KUBECHAIN_CACHE:-$HOME/.cache/kubechain}/k8s-1.20.2"
wanted=(kube-apiserver kube-controller-manager)
[ "${1:-}" = --node ] && wanted+=(kubelet kube-proxy kube-scheduler pause)
have() { local b; [ -x "$1/etcd" ] || return 1; for b in "${wanted[@]}"; do [ -x "$1/$b" ] || return 1; done; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && have "$KUBEBUILDER_ASSETS"; then echo "$KUBEBUILDER_ASSETS"; exit 0; fi
if have "$CACHE"; then echo "$CACHE"; exit 0; fi

log() { echo "[k8s-binaries] $*" >&2; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive

if ! command -v etcd >/dev/null; then
  log "installing etcd-server (apt)"
  sudo_ apt-get update -qq >&2 && sudo_ apt-get install -y -qq etcd-server >&2
fi
mkdir -p "$CACHE"
ln -sf "$(command -v etcd)" "$CACHE/etcd"

# Binaries in $KUBEBUILDER_ASSETS or on PATH are used as they are; the rest are built
missing=()
for b in "${wanted[@]}"; do
  if [ -x "$CACHE/$b" ]; then continue; fi
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$b" ]; then ln -sf "$KUBEBUILDER_ASSETS/$b" "$CACHE/$b"
  elif command -v "$b" >/dev/null; then ln -sf "$(command -v "$b")" "$CACHE/$b"; else missing+=("$b"); fi
done
if [ "${#missing[@]}" = 0 ]; then echo "$CACHE"; exit 0; fi

log "building ${missing[*]} from Debian's kubernetes source (once)"
src_list=/etc/apt/sources.list.d/kubechain-deb-src.sources
if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  sudo_ tee "$src_list" >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
sudo_ apt-get update -qq >&2
sudo_ apt-get install -y -qq golang-go rsync jq golang-github-modern-go-reflect2-dev dpkg-dev gcc libc6-dev >&2

work="$(mktemp -d "${TMPDIR:-/tmp}/kubechain-k8s-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get source --download-only kubernetes >&2
tar xzf kubernetes_*.orig.tar.gz
cd "$(find . -maxdepth 1 -mindepth 1 -type d -name 'kubernetes*' | head -n1)"
# The vendored reflect2 v1.0.1 faults under Go >= 1.18 on the first CR create; use Debian's v1.0.2.
rm -rf vendor/github.com/modern-go/reflect2
mkdir -p vendor/github.com/modern-go/reflect2
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s \
   vendor/github.com/modern-go/reflect2/ 2>/dev/null || cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go vendor/github.com/modern-go/reflect2/
mkdir -p .go/src/k8s.io && ln -s ../../.. .go/src/k8s.io/kubernetes
# CGO off: static binaries, no C toolchain needed (the kubelet builds and runs without cgo too: it reaches
# containerd over CRI and reads cgroups through the filesystem)
export GOPATH="$PWD/.go" CGO_ENABLED=0 HOME="$work/home"
mkdir -p "$HOME"
go_cmds=()
for b in "${missing[@]}"; do [ "$b" = pause ] || go_cmds+=("cmd/$b"); done
if [ "${#go_cmds[@]}" -gt 0 ]; then make WHAT="${go_cmds[*]}" >&2; fi  # one make: the code generators run once
for b in "${missing[@]}"; do
  if [ "$b" = pause ]; then
    gcc -Os -static -Wall -DVERSION=v3.4-kubechain -o "$CACHE/pause" build/pause/linux/pause.c >&2
  else
    install -m 0755 "_output/bin/$b" "$CACHE/"
  fi
done
log "cached in $CACHE"
echo "$CACHE"
