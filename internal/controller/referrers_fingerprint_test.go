package controller

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
	"github.com/portcullis-dev/portcullis/internal/verify/verifytest"
)

// TestReferrersFingerprint: on a registry with the OCI referrers API (go-containerregistry's
// registry), a verification result stands while the digest's referrers are unchanged: checking an
// unchanged image again costs one referrers GET and nothing else, and a signature attached as a
// referrer since is verified at the next check.
func TestReferrersFingerprint(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(true)))
	t.Cleanup(srv.Close)
	px := newProxy(t, srv.URL)
	host := strings.TrimPrefix(px.URL, "http://")
	img := registrytest.RandomImage(t)
	tag, err := name.ParseReference(host+"/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	dg, _ := img.Digest()
	digest, err := name.NewDigest(host+"/app@"+dg.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	signer := verifytest.NewBundleSigner(t)
	reg := &v1alpha1.Registry{Spec: v1alpha1.RegistrySpec{URL: px.URL, Insecure: true}}
	pol := v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "signed", UID: "p-1"}, Spec: v1alpha1.RepositoryPolicySpec{
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "release",
			Key: &v1alpha1.KeyAuthority{Data: string(signer.PublicPEM)}, IgnoreTransparencyLog: true}}}}}
	ia := &v1alpha1.ImageAttestation{Spec: v1alpha1.ImageAttestationSpec{Repository: "app", Digest: dg.String(), Tags: []string{"v1"}}}
	rc, err := registry.New(registry.Config{URL: px.URL, Insecure: true, MetricsName: "test/fingerprint"})
	if err != nil {
		t.Fatal(err)
	}
	r := &ImageAttestationReconciler{}
	check := func(step string, verified bool) map[string]int {
		t.Helper()
		before := px.snapshot()
		out, err := r.verifySignatures(ctx, ia, reg, rc, []v1alpha1.RepositoryPolicy{pol})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if got := out["signed"].Verified; got != verified {
			t.Fatalf("%s: verified %v, want %v (%+v)", step, got, verified, out["signed"])
		}
		after := px.snapshot()
		delta := map[string]int{}
		for k, v := range after {
			if v != before[k] {
				delta[k] = v - before[k]
			}
		}
		return delta
	}

	check("unsigned", false)
	if d := check("unsigned, unchanged", false); len(d) != 1 || d["GET referrers"] != 1 {
		t.Errorf("an unchanged image cost %v, want one referrers GET", d)
	}
	signer.SignBundle(t, digest)
	if d := check("signed since", true); d["GET referrers"] < 2 || d["GET manifest"] == 0 {
		t.Errorf("a new referrer must be read and verified: %v", d)
	}
	if d := check("signed, unchanged", true); len(d) != 1 || d["GET referrers"] != 1 {
		t.Errorf("an unchanged signed image cost %v, want one referrers GET", d)
	}
}

// TestVerificationDeadline: a registry that holds a response (a body dripped, a stalled proxy)
// does not hold the worker: past verifyTimeout the verification fails as a registry error, which
// keeps the last verdict and is retried.
func TestVerificationDeadline(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(true)))
	t.Cleanup(srv.Close)
	px := newProxy(t, srv.URL)
	img := registrytest.RandomImage(t)
	tag, err := name.ParseReference(strings.TrimPrefix(px.URL, "http://")+"/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	dg, _ := img.Digest()
	px.mu.Lock()
	px.slowPath, px.slowBy = "/referrers/", time.Minute
	px.mu.Unlock()
	defer func(d time.Duration) { verifyTimeout = d }(verifyTimeout)
	verifyTimeout = 300 * time.Millisecond

	reg := &v1alpha1.Registry{Spec: v1alpha1.RegistrySpec{URL: px.URL, Insecure: true}}
	pol := v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "signed", UID: "p-2"}, Spec: v1alpha1.RepositoryPolicySpec{
		Verification: &v1alpha1.VerificationSpec{Authorities: []v1alpha1.Authority{{Name: "release",
			Key: &v1alpha1.KeyAuthority{Data: string(verifytest.NewBundleSigner(t).PublicPEM)}, IgnoreTransparencyLog: true}}}}}
	ia := &v1alpha1.ImageAttestation{Spec: v1alpha1.ImageAttestationSpec{Repository: "app", Digest: dg.String(), Tags: []string{"v1"}}}
	rc, err := registry.New(registry.Config{URL: px.URL, Insecure: true, MetricsName: "test/deadline"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = (&ImageAttestationReconciler{}).verifySignatures(ctx, ia, reg, rc, []v1alpha1.RepositoryPolicy{pol})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a deadline error, got %v", err)
	}
	if waited := time.Since(start); waited > 30*time.Second {
		t.Fatalf("the verification waited %v for the stalled registry", waited)
	}
}
