package controller

import (
	"context"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
)

// TestScanCrashIsScanFailed: an image that makes trivy panic in its own goroutine is ScanFailed (and
// so fails a policy with thresholds) with the panic in the message; the manager lives on and scans
// the next image, in a new worker.
func TestScanCrashIsScanFailed(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	hostile, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"data/panic-me": []byte("x")}))
	if err != nil {
		t.Fatal(err)
	}
	bad := dist.Push(t, "apps/hostile", "v1", hostile)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: dist.URL, Insecure: true}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "scanned", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"},
		Scanning: &v1alpha1.ScanningSpec{Secrets: &v1alpha1.SecretThreshold{}}}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ia := imageFor(t, ns, "apps/hostile", bad, "ScanFailed", func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionFalse, scanFailedReason) &&
			hasCondition(ia, v1alpha1.PolicyCompliantCondition, metav1.ConditionFalse, policy.ReasonScanFailed)
	})
	if m := findCondition(ia, v1alpha1.VulnerabilitiesScannedCondition).Message; !containsAll(m, "scan worker process exited", "panic: "+scantest.PanicMessage) {
		t.Errorf("ScanFailed message: %q", m)
	}
	good := dist.Push(t, "apps/fine", "v1", registrytest.RandomImage(t))
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(reg), reg); err != nil {
		t.Fatal(err)
	}
	patchObject(t, reg, func(r *v1alpha1.Registry) {
		r.Annotations = map[string]string{ReconcileRequestAnnotation: "after-the-crash"}
	})
	imageFor(t, ns, "apps/fine", good, "scanned and compliant", func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionTrue, scannedReason) &&
			hasCondition(ia, v1alpha1.PolicyCompliantCondition, metav1.ConditionTrue, compliantReason)
	})
}
