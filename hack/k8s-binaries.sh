#!/usr/bin/env bash
# Provision etcd, kube-apiserver and kube-controller-manager for the local control plane
# (envtest-style: no kubelet, no Docker). Prints the directory that holds the three binaries.
#
# Order of preference: $KUBEBUILDER_ASSETS, binaries already on PATH, then a cached build from
# Debian's `kubernetes` source package (1.20.2, ~7 min on 2 cores, done once per machine).
set -euo pipefail

CACHE="${KUBECHAIN_CACHE:-$HOME/.cache/kubechain}/k8s-1.20.2"
have() { [ -x "$1/kube-apiserver" ] && [ -x "$1/kube-controller-manager" ] && [ -x "$1/etcd" ]; }

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

if command -v kube-apiserver >/dev/null && command -v kube-controller-manager >/dev/null; then
  ln -sf "$(command -v kube-apiserver)" "$CACHE/kube-apiserver"
  ln -sf "$(command -v kube-controller-manager)" "$CACHE/kube-controller-manager"
  echo "$CACHE"; exit 0
fi

log "building kube-apiserver and kube-controller-manager from Debian's kubernetes source (once)"
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
sudo_ apt-get install -y -qq golang-go rsync jq golang-github-modern-go-reflect2-dev dpkg-dev >&2

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
export GOPATH="$PWD/.go" CGO_ENABLED=0 HOME="$work/home"
mkdir -p "$HOME"
make WHAT=cmd/kube-apiserver >&2
make WHAT=cmd/kube-controller-manager >&2
install -m 0755 _output/bin/kube-apiserver _output/bin/kube-controller-manager "$CACHE/"
log "cached in $CACHE"
echo "$CACHE"
