package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunsCommandAgainstControlPlane runs localenv as `make run` does, with a command that checks, via
// kubectl and the KUBECONFIG it was given, that the CRDs are installed; then checks the kubeconfig is
// removed afterwards.
func TestRunsCommandAgainstControlPlane(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run with `make test`")
	}
	state := t.TempDir()
	out := filepath.Join(state, "out")
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	script := kubectl + ` get crd registries.registry.portcullis.dev repositorypolicies.registry.portcullis.dev imageattestations.registry.portcullis.dev -o name > ` + out
	err := run([]string{"-state", state, "-crds", filepath.Join("..", "..", "config", "crd", "bases"), "--", "sh", "-c", script})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "customresourcedefinition"); n != 3 {
		t.Fatalf("want the 3 CRDs installed, kubectl printed:\n%s", data)
	}
	if _, err := os.Stat(filepath.Join(state, "kubeconfig")); !os.IsNotExist(err) {
		t.Fatalf("kubeconfig left behind (stat err %v)", err)
	}
}

func TestNeedsCommand(t *testing.T) {
	if err := run(nil); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Fatalf("want a usage error, got %v", err)
	}
}

// TestCommandOutputGoesToItsLog: the command's output (the manager's JSON logs) lands in
// <state>/<command>.log, not between the demo's own lines; a failing command's log end is printed.
func TestCommandOutputGoesToItsLog(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run with `make test`")
	}
	state := t.TempDir()
	err := run([]string{"-state", state, "-crds", filepath.Join("..", "..", "config", "crd", "bases"), "--", "sh", "-c", `echo '{"level":"info","msg":"manager line"}'; exit 3`})
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("want the command's failure, got %v", err)
	}
	data, err := os.ReadFile(filepath.Join(state, "sh.log"))
	if err != nil || !strings.Contains(string(data), "manager line") {
		t.Fatalf("the log %q, %v: want the command's output", data, err)
	}
}
