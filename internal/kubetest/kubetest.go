// Package kubetest starts a real kube-apiserver and etcd (controller-runtime's envtest, binaries
// from KUBEBUILDER_ASSETS) with Portcullis's CRDs, for the tests of packages outside the controller
// suite.
package kubetest

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// Start starts an API server with the CRDs of config/crd/bases and those of extraCRDs (files or
// directories), stopped when t ends, and returns its config, a client and the scheme both use
// (client-go's kinds and Portcullis's). It fails t when KUBEBUILDER_ASSETS is not set (run the tests
// with `make test`), when the repository root (the directory of go.mod, above the working directory)
// is not found, or when the server does not start.
func Start(t testing.TB, extraCRDs ...string) (*rest.Config, client.Client, *runtime.Scheme) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with `make test`")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			t.Fatal("kubetest: no go.mod above the working directory")
		}
		root = parent
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	env := &envtest.Environment{CRDDirectoryPaths: append([]string{filepath.Join(root, "config", "crd", "bases")}, extraCRDs...),
		ErrorIfCRDPathMissing: true, Scheme: scheme}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, c, scheme
}
