//go:build tools

// Package tools pins k8s.io/kubernetes so that `go build k8s.io/kubernetes/cmd/kube-apiserver`
// builds the upstream API server for envtest from the Go module proxy (see hack/envtest-assets.sh).
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver/app"
