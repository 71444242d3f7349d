package controller

import (
	"context"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tov1alpha1 "github.com/aquasecurity/trivy-operator/pkg/apis/aquasecurity/v1alpha1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
)

// TestScanning pushes an image holding a real Go binary built against golang.org/x/text v0.3.5 to a
// registry with htpasswd auth, and checks that its ImageAttestation reports CVE-2021-38561 with the
// real fixed version, UNKNOWN severity (the Go database gives none), the scanner and the DB time,
// while a clean image reports none; a policy generation change does not rescan.
func TestScanning(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{Username: "robot", Password: "pw"})
	vulnImg, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	vuln := dist.Push(t, "team-a/server", "v1", vulnImg)
	clean := dist.Push(t, "team-a/clean", "v1", registrytest.RandomImage(t))

	secret := basicAuthSecret(ns, "creds", "robot", "pw")
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
		URL: dist.URL, Insecure: true, SecretRef: &v1alpha1.LocalObjectReference{Name: "creds"}}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"}}}
	for _, o := range []client.Object{secret, pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	scanned := func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionTrue, scannedReason)
	}
	ia := imageFor(t, ns, "team-a/server", vuln, "scanned", scanned)
	v := ia.Status.Vulnerabilities
	if v == nil || v.Unknown < 1 || len(v.Top) == 0 {
		t.Fatalf("vulnerabilities: %+v", v)
	}
	var found *v1alpha1.VulnerabilityFinding
	for i := range v.Top {
		if v.Top[i].ID == "CVE-2021-38561" {
			found = &v.Top[i]
		}
	}
	if found == nil || found.Package != "golang.org/x/text" || found.FixedVersion != "0.3.7" || found.Severity != v1alpha1.SeverityUnknown {
		t.Fatalf("CVE-2021-38561 not reported as expected: %+v", v.Top)
	}
	if ia.Status.Scanner == nil || ia.Status.Scanner.Name != "trivy" || ia.Status.Scanner.DBUpdatedAt == nil || ia.Status.LastScanTime == nil {
		t.Errorf("scanner info: %+v, lastScanTime %v", ia.Status.Scanner, ia.Status.LastScanTime)
	}
	// A Go binary on no base image: no OS, and the status says its packages were not assessed.
	if c := findCondition(ia, v1alpha1.VulnerabilitiesScannedCondition); ia.Status.Scanner.OS != noOS || !strings.Contains(c.Message, "no OS detected: OS packages not assessed") {
		t.Errorf("scanner OS %q, condition %q: want %q and the no-OS note", ia.Status.Scanner.OS, c.Message, noOS)
	}
	// The trivy-operator export (on in this suite) carries the same finding.
	vr := &tov1alpha1.VulnerabilityReport{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: ia.Name}, vr); err != nil {
		t.Fatalf("VulnerabilityReport: %v", err)
	}
	if vr.Report.Artifact.Digest != vuln || vr.Report.Summary.UnknownCount < 1 || len(vr.OwnerReferences) != 1 || vr.OwnerReferences[0].Name != ia.Name {
		t.Errorf("VulnerabilityReport: artifact %+v summary %+v owners %v", vr.Report.Artifact, vr.Report.Summary, vr.OwnerReferences)
	}
	var exported bool
	for _, v := range vr.Report.Vulnerabilities {
		exported = exported || (v.VulnerabilityID == "CVE-2021-38561" && v.Resource == "golang.org/x/text")
	}
	if !exported {
		t.Errorf("CVE-2021-38561 missing from the VulnerabilityReport: %+v", vr.Report.Vulnerabilities)
	}
	cleanIA := imageFor(t, ns, "team-a/clean", clean, "scanned", scanned)
	if c := cleanIA.Status.Vulnerabilities; c == nil || c.Critical+c.High+c.Medium+c.Low+c.Unknown != 0 {
		t.Errorf("a clean image reports vulnerabilities: %+v", c)
	}

	// A policy change re-evaluates but does not rescan: lastScanTime stays.
	last := ia.Status.LastScanTime.DeepCopy()
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Tags.Exclude = []string{"*-dev"} })
	waitFor(t, pol, "Ready at the new generation", policyReady)
	ia = imageFor(t, ns, "team-a/server", vuln, "still scanned", scanned)
	if !ia.Status.LastScanTime.Equal(last) {
		t.Errorf("a policy change rescanned: lastScanTime %v -> %v", last, ia.Status.LastScanTime)
	}

	// A policy that requires an OS fails the image with NoOSDetected.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Scanning = &v1alpha1.ScanningSpec{RequireOS: true} })
	imageFor(t, ns, "team-a/server", vuln, "NoOSDetected", func(ia *v1alpha1.ImageAttestation) bool {
		return len(ia.Status.Policies) == 1 && !ia.Status.Policies[0].Compliant && slices.Contains(ia.Status.Policies[0].Reasons, policy.ReasonNoOSDetected)
	})
}

// TestNotAnImage: what a manifest is, from its body.
func TestNotAnImage(t *testing.T) {
	for _, c := range []struct {
		body, mediaType, want string
	}{
		{`{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json"}}`, "application/vnd.oci.image.manifest.v1+json", ""},
		{`{"config":{"mediaType":"application/vnd.docker.container.image.v1+json"}}`, "application/vnd.docker.distribution.manifest.v2+json", ""},
		{`{"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json"}}`, "application/vnd.oci.image.manifest.v1+json", "application/vnd.cncf.helm.config.v1+json"},
		{`{"artifactType":"application/vnd.example.sbom","config":{"mediaType":"application/vnd.oci.empty.v1+json"}}`, "application/vnd.oci.image.manifest.v1+json", "application/vnd.example.sbom"},
		{`{"config":{"mediaType":"application/vnd.wasm.config.v0+json"}}`, "application/vnd.oci.image.manifest.v1+json", "application/vnd.wasm.config.v0+json"},
		{`{"manifests":[]}`, "application/vnd.oci.image.index.v1+json", ""},
		{`not json`, "application/vnd.oci.image.manifest.v1+json", ""},
	} {
		if got := notAnImage([]byte(c.body), c.mediaType); got != c.want {
			t.Errorf("%s: %q, want %q", c.body, got, c.want)
		}
	}
}

// TestArtifactNotApplicable: a Helm chart in the catalog is not scanned and not failed: its
// VulnerabilitiesScanned says NotApplicable (final, never retried), and a policy with scanning
// thresholds judges it compliant.
func TestArtifactNotApplicable(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	chart := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	chart = mutate.ConfigMediaType(chart, "application/vnd.cncf.helm.config.v1+json")
	chart, err := mutate.AppendLayers(chart, static.NewLayer([]byte("chart"), "application/vnd.cncf.helm.chart.content.v1.tar+gzip"))
	if err != nil {
		t.Fatal(err)
	}
	d := dist.Push(t, "charts/app", "1.0.0", chart)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: dist.URL, Insecure: true}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "scan", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"**"},
		Scanning: &v1alpha1.ScanningSpec{Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxCritical: ptrTo(int32(0))}, RequireOS: true}}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ia := imageFor(t, ns, "charts/app", d, "NotApplicable and compliant", func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionFalse, notApplicableReason) &&
			len(ia.Status.Policies) == 1 && ia.Status.Policies[0].Compliant
	})
	if c := findCondition(ia, v1alpha1.VulnerabilitiesScannedCondition); !strings.Contains(c.Message, "application/vnd.cncf.helm.config.v1+json") {
		t.Errorf("condition message %q does not name the artifact's type", c.Message)
	}
	// Another pass does not try again.
	last := ia.Status.LastScanTime.DeepCopy()
	requestPass(t, reg)
	time.Sleep(time.Second)
	ia = imageFor(t, ns, "charts/app", d, "still NotApplicable", func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.VulnerabilitiesScannedCondition, metav1.ConditionFalse, notApplicableReason)
	})
	if !ia.Status.LastScanTime.Equal(last) {
		t.Errorf("a not-applicable artifact was looked at again: lastScanTime %v -> %v", last, ia.Status.LastScanTime)
	}
}
