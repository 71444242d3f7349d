package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestEvaluateOnDemand: Wiring.Evaluate (what the admission webhook calls for a policy with
// waitForVerdict) puts an image pushed after the last listing into the inventory with one manifest
// request and no listing, and the real controllers verify and judge it; the caller's digest is
// checked against the registry; an image no policy selects, or a repository the Registry does not
// watch, is refused without a request.
func TestEvaluateOnDemand(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	p := newProxy(t, dist.URL)
	first := dist.Push(t, "shop/app", "v1", registrytest.RandomImage(t))
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns}, Spec: v1alpha1.RegistrySpec{URL: p.URL, Insecure: true,
		Interval: &metav1.Duration{Duration: 24 * time.Hour}}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"shop/**"}, Tags: v1alpha1.PatternSelector{Include: []string{"v*"}}}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	judged := func(ia *v1alpha1.ImageAttestation) bool { return len(ia.Status.Policies) == 1 }
	imageFor(t, ns, "shop/app", first, "the first listing's image judged", judged)
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(reg), reg); err != nil {
		t.Fatal(err)
	}

	pushed := dist.Push(t, "shop/app", "v2", registrytest.RandomImage(t))
	before := p.snapshot()
	digest, err := testWiring.Evaluate(ctx, reg, "shop/app", "v2", "")
	if err != nil || digest != pushed {
		t.Fatalf("Evaluate = %q, %v; want %s", digest, err, pushed)
	}
	after := p.snapshot()
	if d := after["HEAD manifest"] - before["HEAD manifest"]; d != 1 || after["GET tags"] != before["GET tags"] || after["GET catalog"] != before["GET catalog"] {
		t.Errorf("requests for one evaluation: %v -> %v; want one manifest HEAD and no listing", before, after)
	}
	ia := imageFor(t, ns, "shop/app", pushed, "the pushed image judged without a listing", judged)
	if len(ia.Spec.Tags) != 1 || ia.Spec.Tags[0] != "v2" || len(ia.OwnerReferences) != 1 || ia.OwnerReferences[0].Name != "dist" {
		t.Errorf("on-demand ImageAttestation: tags %v, owners %v", ia.Spec.Tags, ia.OwnerReferences)
	}
	// Again: the ImageAttestation exists, nothing is created.
	if d, err := testWiring.Evaluate(ctx, reg, "shop/app", "", pushed); err != nil || d != pushed {
		t.Errorf("evaluating a known digest: %q, %v", d, err)
	}

	for _, c := range []struct{ repo, tag, digest, want string }{
		{"shop/app", "v2", first, "points at " + pushed},
		{"shop/app", "latest", "", "no RepositoryPolicy"},
		{"other/app", "v1", "", "no RepositoryPolicy"},
	} {
		if _, err := testWiring.Evaluate(ctx, reg, c.repo, c.tag, c.digest); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Evaluate(%s, %q, %q) = %v; want an error with %q", c.repo, c.tag, c.digest, err, c.want)
		}
	}
}
