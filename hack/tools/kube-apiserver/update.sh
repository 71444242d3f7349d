#!/usr/bin/env bash
# Regenerates this module's go.mod for a Kubernetes release: requires k8s.io/kubernetes at VERSION and
# replaces every k8s.io/<staging> module with v0.<minor>.<patch>, the list taken from the replace block
# of k8s.io/kubernetes's own go.mod (which points at ./staging and so cannot be used as a dependency).
# Usage: hack/tools/kube-apiserver/update.sh v1.36.3
set -euo pipefail
version=${1:?usage: update.sh vMAJOR.MINOR.PATCH}
cd "$(dirname "$0")"
modfile=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
staging=v0${version#v1}
{
	echo "// Module kube-apiserver builds the real kube-apiserver from k8s.io/kubernetes for envtest."
	echo "// Regenerate with hack/tools/kube-apiserver/update.sh VERSION; do not edit by hand."
	echo "module github.com/portcullis-dev/portcullis/hack/tools/kube-apiserver"
	echo
	echo "go $(sed -n 's/^go //p' "$modfile")"
	echo
	echo "require k8s.io/kubernetes $version"
	echo
	echo "replace ("
	sed -n '/^replace (/,/^)/p' "$modfile" | awk -v v="$staging" '/=>/ {print "\t" $1 " => " $1 " " v}'
	echo ")"
} > go.mod
rm -f go.sum
go mod tidy
echo "go.mod now builds kube-apiserver $version with $(grep -c '=> k8s.io' go.mod) staging modules at $staging"
