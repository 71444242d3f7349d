#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver, etcd) from Go modules, because release binaries
# cannot be downloaded on our machines, and links kubectl beside them. Prints the assets folder for
# KUBEBUILDER_ASSETS. Reuses what was built before: the folder is keyed by version and lives outside
# the clone (PORTCULLIS_CACHE, default $HOME/.cache/portcullis).
#
# Usage: hack/envtest-assets.sh   (env: PORTCULLIS_CACHE, KUBE_VERSION, ETCD_VERSION)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}
kube_version=${KUBE_VERSION:-$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$root/hack/tools/kube-apiserver/go.mod")}
etcd_version=${ETCD_VERSION:-$(sed -n 's/^require go.etcd.io\/etcd\/server\/v3 \(v[0-9.]*\)$/\1/p' "$root/hack/tools/etcd/go.mod")}
# The folder is keyed by the versions and by a hash of the helper modules' go.sum, so a change to a
# helper module (a replace line, a dependency) builds afresh instead of reusing a stale binary.
mods_hash=$(cat "$root/hack/tools/kube-apiserver/go.sum" "$root/hack/tools/etcd/go.sum" | sha256sum | cut -c1-8)
out="$cache/envtest/kube-${kube_version}-etcd-${etcd_version}-${mods_hash}"
mkdir -p "$out"

log() { echo "envtest-assets: $*" >&2; }

# build NAME DIR PKG [ldflags]: go build into a temp file, then rename, so an interrupted build never
# leaves a half-written binary that a later run would trust.
build() {
	local name=$1 dir=$2 pkg=$3 ldflags=${4:-}
	if [[ -x "$out/$name" ]]; then
		return
	fi
	log "building $name ($pkg) into $out; the first time takes minutes, later runs reuse it"
	local start=$SECONDS
	# Upstream builds these without GOEXPERIMENT (the Makefile sets jsonv2 for trivy): build them as
	# upstream does.
	(cd "$dir" && GOEXPERIMENT= CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out/.$name.tmp" "$pkg")
	mv "$out/.$name.tmp" "$out/$name"
	log "built $name in $((SECONDS - start))s"
}

v=k8s.io/component-base/version
minor=${kube_version#v1.}; minor=${minor%%.*}
build kube-apiserver "$root/hack/tools/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver \
	"-X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
build etcd "$root/hack/tools/etcd" .

if [[ ! -e "$out/kubectl" ]]; then
	if kubectl=$(command -v kubectl); then
		ln -sf "$kubectl" "$out/kubectl"
	else
		log "kubectl not on PATH: envtest runs without it (only kubectl-based helpers need it)"
	fi
fi
echo "$out"
