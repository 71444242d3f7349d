package controller

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestSamplesApply applies every file listed in config/samples/kustomization.yaml to the real API
// server, checks there is one sample per kind, and that the Registry and the RepositoryPolicy samples
// reconcile to Ready (kstatus Current).
func TestSamplesApply(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dir := filepath.Join("..", "..", "config", "samples")
	var kust struct {
		Resources []string `json:"resources"`
	}
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &kust)

	dist := registrytest.StartDistribution(t, registrytest.Options{})
	dist.Push(t, "team-a/app", "v1.2.0", registrytest.RandomImage(t))
	kinds := map[string]bool{}
	for _, f := range kust.Resources {
		u := &unstructured.Unstructured{}
		readYAML(t, filepath.Join(dir, f), &u.Object)
		u.SetNamespace(ns)
		if u.GetKind() == "Registry" { // the sample names a registry on loopback: point it at ours
			if err := unstructured.SetNestedField(u.Object, dist.URL, "spec", "url"); err != nil {
				t.Fatal(err)
			}
		}
		if err := k8sClient.Create(ctx, u); err != nil {
			t.Fatalf("applying sample %s: %v", f, err)
		}
		kinds[u.GetKind()] = true
	}
	for _, k := range []string{"Registry", "RepositoryPolicy", "ImageAttestation"} {
		if !kinds[k] {
			t.Errorf("config/samples has no %s", k)
		}
	}

	reg := &v1alpha1.Registry{}
	reg.Name, reg.Namespace = "local", ns
	waitFor(t, reg, "Ready", isReady)
	pol := &v1alpha1.RepositoryPolicy{}
	pol.Name, pol.Namespace = "baseline", ns
	waitFor(t, pol, "Ready", policyReady)
	for _, o := range []client.Object{reg, pol} {
		if res := kstatusOf(t, o); res.Status != status.CurrentStatus {
			t.Errorf("%s: kstatus %s, want Current", o.GetName(), res.Status)
		}
	}
	if pol.Spec.Mode != v1alpha1.ModeAudit || *pol.Spec.Retention.DryRun != true {
		t.Errorf("sample policy must audit and dry-run retention: mode %s dryRun %v", pol.Spec.Mode, *pol.Spec.Retention.DryRun)
	}
	if !hasCondition(reg, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason) {
		t.Errorf("registry sample not Ready: %+v", reg.Status.Conditions)
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
