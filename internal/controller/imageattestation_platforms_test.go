package controller

import (
	"context"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
)

// TestIndexPlatformScans pushes multi-platform indexes to a real registry and checks that each
// platform image gets its own scan: an index whose arm64 image holds a vulnerable Go binary and
// whose amd64 image is clean fails on the arm64 finding (which the default linux/amd64 pick would
// never see), with per-platform counts; a BuildKit attestation manifest (unknown/unknown) is not a
// platform; an arm64-only index is scanned, not failed; an index of attestations only is
// NotApplicable.
func TestIndexPlatformScans(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	vulnImg, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	clean := registrytest.RandomImage(t)
	attestation := registrytest.RandomImage(t)
	cleanDigest, _ := clean.Digest()
	vulnDigest, _ := vulnImg.Digest()
	attDigest, _ := attestation.Digest()
	index := func(entries ...mutate.IndexAddendum) v1.ImageIndex {
		return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), entries...)
	}
	amd64 := mutate.IndexAddendum{Add: clean, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}}
	arm64 := mutate.IndexAddendum{Add: vulnImg, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}}
	att := mutate.IndexAddendum{Add: attestation, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
		Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": cleanDigest.String()}}}
	multi := dist.PushIndex(t, "multi/app", "v1", index(amd64, arm64, att))
	armOnly := dist.PushIndex(t, "armonly/app", "v1", index(arm64))
	attOnly := dist.PushIndex(t, "attonly/app", "v1", index(att))

	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: dist.URL, Insecure: true}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "scan", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"},
		Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxUnknown: ptrTo(int32(0))}}}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	judged := func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionTrue, scannedReason) && len(ia.Status.Policies) == 1
	}
	ia := imageFor(t, ns, "multi/app", multi, "scanned per platform", judged)
	ps := ia.Status.Platforms
	if len(ps) != 2 || ps[0].Platform != "linux/amd64" || ps[0].Digest != cleanDigest.String() || ps[1].Platform != "linux/arm64/v8" ||
		ps[1].Digest != vulnDigest.String() {
		t.Fatalf("platforms %+v; want linux/amd64 %s and linux/arm64/v8 %s, not the attestation %s", ps, cleanDigest, vulnDigest, attDigest)
	}
	if ps[0].Unknown != 0 || ps[1].Unknown < 1 || ia.Status.Vulnerabilities == nil || ia.Status.Vulnerabilities.Unknown != ps[1].Unknown {
		t.Errorf("counts: amd64 %+v, arm64 %+v, merged %+v", ps[0], ps[1], ia.Status.Vulnerabilities)
	}
	if ia.Status.Policies[0].Compliant {
		t.Errorf("the index is compliant, but its arm64 image has CVE-2021-38561: %+v", ia.Status.Policies[0])
	}
	if c := findCondition(ia, v1alpha1.VulnerabilitiesScannedCondition); !strings.Contains(c.Message, "merged from 2 platforms (linux/amd64, linux/arm64/v8)") {
		t.Errorf("condition message %q", c.Message)
	}

	ia = imageFor(t, ns, "armonly/app", armOnly, "an arm64-only index scanned", judged)
	if len(ia.Status.Platforms) != 1 || ia.Status.Platforms[0].Platform != "linux/arm64/v8" || ia.Status.Platforms[0].Unknown < 1 {
		t.Errorf("arm64-only index: platforms %+v", ia.Status.Platforms)
	}

	imageFor(t, ns, "attonly/app", attOnly, "an index of attestations only is NotApplicable", func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionFalse, notApplicableReason)
	})
}
