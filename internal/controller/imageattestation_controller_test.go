package controller

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// TestImageAttestationStatus checks that an ImageAttestation of a missing Registry is Stalled, and
// that one of an existing Registry says it has no verdict yet: InProgress in kstatus, every domain
// condition Unknown, never compliant by default.
func TestImageAttestationStatus(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	img := validImage()
	img.Namespace = ns
	if err := k8sClient.Create(ctx, img); err != nil {
		t.Fatal(err)
	}
	waitFor(t, img, "Stalled RegistryNotFound", func(i *v1alpha1.ImageAttestation) bool {
		return hasCondition(i, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.RegistryNotFoundReason) && i.Status.ObservedGeneration == i.Generation
	})
	if res := kstatusOf(t, img); res.Status != status.FailedStatus {
		t.Fatalf("kstatus %s, want Failed", res.Status)
	}

	reg := validRegistry()
	reg.Namespace = ns
	if err := k8sClient.Create(ctx, reg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, img, "Reconciling", func(i *v1alpha1.ImageAttestation) bool {
		return hasConditionStatus(i, v1alpha1.ReconcilingCondition, metav1.ConditionTrue) && findCondition(i, v1alpha1.StalledCondition) == nil
	})
	if res := kstatusOf(t, img); res.Status != status.InProgressStatus {
		t.Fatalf("kstatus %s, want InProgress", res.Status)
	}
	if findCondition(img, v1alpha1.StalledCondition) != nil {
		t.Fatal("Stalled must be cleared once the Registry exists")
	}
	// The Registry's host does not resolve: the scan fails and says so; nothing passes by default.
	waitFor(t, img, "ScanFailed", func(i *v1alpha1.ImageAttestation) bool {
		return hasCondition(i, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionFalse, scanFailedReason)
	})
	for typ, reason := range map[string]string{
		v1alpha1.SignatureVerifiedCondition: notRequiredReason, // no policy selects it
		v1alpha1.PolicyCompliantCondition:   noPolicyReason,
	} {
		if !hasCondition(img, typ, metav1.ConditionUnknown, reason) {
			t.Errorf("condition %s: want Unknown/%s, got %+v", typ, reason, findCondition(img, typ))
		}
	}
	if hasCondition(img, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason) {
		t.Fatal("an ImageAttestation without a verdict must not be Ready")
	}
}
