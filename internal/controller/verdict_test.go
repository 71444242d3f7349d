package controller

import (
	"context"
	"crypto"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/scan/scantest"
	"github.com/portcullis-dev/portcullis/internal/verify"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

func compliance(s metav1.ConditionStatus, reason string) func(*v1alpha1.ImageAttestation) bool {
	return func(ia *v1alpha1.ImageAttestation) bool {
		return hasCondition(ia, v1alpha1.PolicyCompliantCondition, s, reason) &&
			hasCondition(ia, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.SucceededReason)
	}
}

// TestVerdicts runs the whole loop on real images in a real registry: a signed image holding a Go
// binary with a known-vulnerable dependency, a signed image with a planted cloud key, and an unsigned
// clean image, under a policy that requires a signature, no vulnerability of UNKNOWN severity and no
// secret. It checks each verdict and its reasons, the policy's counts and list, the events, the
// verdict metric, and that a policy change turns an image compliant again without a rescan.
func TestVerdicts(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	vulnImg, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{"app/server": scantest.VulnerableGoBinary(t)}))
	if err != nil {
		t.Fatal(err)
	}
	secretImg, err := mutate.AppendLayers(empty.Image, scantest.Layer(t, map[string][]byte{
		"srv/deploy.env": []byte("AWS_ACCESS_KEY_ID=AKIA" + "QWERTYUIOPASDFGH\n")}))
	if err != nil {
		t.Fatal(err)
	}
	vuln := dist.Push(t, "apps/server", "v1", vulnImg)
	leaky := dist.Push(t, "apps/leaky", "v1", secretImg)
	unsigned := dist.Push(t, "apps/clean", "v1", registrytest.RandomImage(t))
	key := verifytest.NewKey(t, "p256", crypto.SHA256)
	for _, ref := range []string{"apps/server@" + vuln, "apps/leaky@" + leaky} {
		d, err := name.NewDigest(dist.Host+"/"+ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		verifytest.Sign(t, d, key.Signer, "")
	}

	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: dist.URL, Insecure: true}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "strict", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"apps/**"},
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{
			Name: "release", Key: &v1alpha1.KeyAuthority{Data: string(key.PublicPEM)}, IgnoreTransparencyLog: true}}},
		Scanning: &v1alpha1.ScanningSpec{
			Vulnerabilities: &v1alpha1.VulnerabilityThresholds{MaxUnknown: ptr(int32(0))},
			Secrets:         &v1alpha1.SecretThreshold{},
		},
	}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	bad := imageFor(t, ns, "apps/server", vuln, "VulnerabilityThresholdExceeded", compliance(metav1.ConditionFalse, policy.ReasonVulnerabilityThresholdExceeded))
	if c := findCondition(bad, v1alpha1.PolicyCompliantCondition); !containsAll(c.Message, "strict: VulnerabilityThresholdExceeded", "UNKNOWN") {
		t.Errorf("PolicyCompliant message: %q", c.Message)
	}
	if !hasCondition(bad, v1alpha1.SignatureVerifiedCondition, metav1.ConditionTrue, verifiedReason) {
		t.Errorf("the signed image must verify: %+v", findCondition(bad, v1alpha1.SignatureVerifiedCondition))
	}
	leakyIA := imageFor(t, ns, "apps/leaky", leaky, "SecretFound", compliance(metav1.ConditionFalse, policy.ReasonSecretFound))
	cleanIA := imageFor(t, ns, "apps/clean", unsigned, "SignatureMissing", compliance(metav1.ConditionFalse, verify.ReasonSignatureMissing))
	for _, tc := range []struct {
		ia      *v1alpha1.ImageAttestation
		reasons []string
	}{
		{bad, []string{policy.ReasonVulnerabilityThresholdExceeded}},
		{leakyIA, []string{policy.ReasonSecretFound}},
		{cleanIA, []string{verify.ReasonSignatureMissing}},
	} {
		ps := tc.ia.Status.Policies
		if len(ps) != 1 || ps[0].Name != "strict" || ps[0].Compliant || !slices.Equal(ps[0].Reasons, tc.reasons) || ps[0].ObservedGeneration != pol.Generation {
			t.Errorf("%s: status.policies %+v, want reasons %v", tc.ia.Spec.Repository, ps, tc.reasons)
		}
	}

	// The policy counts its images and lists the failing ones with their reasons.
	got := waitFor(t, pol, "3 non-compliant images", func(p *v1alpha1.RepositoryPolicy) bool {
		return p.Status.NonCompliantImages == 3 && p.Status.PendingImages == 0
	})
	if got.Status.MatchedRepositories != 3 || got.Status.CompliantImages != 0 || len(got.Status.NonCompliant) != 3 {
		t.Errorf("policy status: %+v", got.Status)
	}
	for _, v := range got.Status.NonCompliant {
		if v.Tag != "v1" || len(v.Reasons) == 0 || v.ImageAttestation == "" {
			t.Errorf("listed image: %+v", v)
		}
	}
	if n := metricValue(t, "portcullis_images", map[string]string{"registry": ns + "/dist", "policy": "strict", "verdict": "noncompliant"}); n != 3 {
		t.Errorf("portcullis_images{verdict=noncompliant} = %v, want 3", n)
	}
	if since := metricValue(t, "portcullis_noncompliant_since_timestamp_seconds", map[string]string{"registry": ns + "/dist", "policy": "strict"}); since <= 0 ||
		time.Unix(int64(since), 0).After(time.Now()) || time.Since(time.Unix(int64(since), 0)) > 10*time.Minute {
		t.Errorf("portcullis_noncompliant_since_timestamp_seconds = %v; want the time the first image of the test failed", since)
	}
	waitForEvent(t, ns, bad.Name, nonCompliantReason)

	// Counting UNKNOWN findings as LOW (no LOW limit) makes the vulnerable image compliant: the verdict
	// is re-evaluated from the kept findings, without a rescan, and an event says so.
	last := bad.Status.LastScanTime.DeepCopy()
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) {
		p.Spec.Scanning.Vulnerabilities.UnknownSeverityAs = v1alpha1.SeverityLow
	})
	good := imageFor(t, ns, "apps/server", vuln, "Compliant", compliance(metav1.ConditionTrue, compliantReason))
	if !good.Status.LastScanTime.Equal(last) {
		t.Errorf("a policy change rescanned: lastScanTime %v -> %v", last, good.Status.LastScanTime)
	}
	if good.Status.Policies[0].ObservedGeneration != pol.Generation {
		t.Errorf("verdict generation %d, policy generation %d", good.Status.Policies[0].ObservedGeneration, pol.Generation)
	}
	waitForEvent(t, ns, bad.Name, compliantReason)
	waitFor(t, pol, "1 compliant, 2 non-compliant", func(p *v1alpha1.RepositoryPolicy) bool {
		return p.Status.CompliantImages == 1 && p.Status.NonCompliantImages == 2 && len(p.Status.NonCompliant) == 2
	})
}

// waitForEvent waits for an events.k8s.io Event of reason about the named object and returns it.
func waitForEvent(t *testing.T, ns, regarding, reason string) eventsv1.Event {
	t.Helper()
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		list := &eventsv1.EventList{}
		if err := k8sClient.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name == regarding && e.Reason == reason {
				return e
			}
			seen = append(seen, e.Regarding.Name+"/"+e.Reason)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event %s about %s; events: %v", reason, regarding, seen)
		}
		time.Sleep(pollInterval)
	}
}

// metricValue sums the gauge or counter name over the series whose labels include want.
func metricValue(t *testing.T, metric string, want map[string]string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue series
				}
			}
			total += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return total
}
