package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestCatalogShrank: a catalog at under half the last count holds deletions back, from 4
// repositories on, and only when something would be deleted.
func TestCatalogShrank(t *testing.T) {
	for _, c := range []struct {
		before, now int32
		gone        int
		held        bool
	}{
		{100, 3, 97, true},
		{100, 49, 51, true},
		{100, 50, 50, false},
		{3, 0, 3, false}, // small catalogs legitimately empty out
		{100, 3, 0, false},
	} {
		err := catalogShrank(c.before, c.now, c.gone)
		if (err != nil) != c.held || (err != nil && !errors.Is(err, errListingShrank)) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

// TestListingShrinkHeld: a repository of 12 tags whose tag list suddenly comes back with 3 keeps
// all 12 ImageAttestations, and the Registry says ListingShrank; when the next listing says the
// same at least shrinkConfirmAfter later, the shrink is applied. A tag list back to normal in between clears the suspicion.
func TestListingShrinkHeld(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	want := map[string]string{}
	var tags []string
	for i := range 12 {
		tag := fmt.Sprintf("v%02d", i)
		tags = append(tags, tag)
		want["shrink/app@"+dist.Push(t, "shrink/app", tag, registrytest.RandomImage(t))] = tag
	}
	px := newProxy(t, dist.URL)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "dist", Namespace: ns},
		Spec: v1alpha1.RegistrySpec{URL: px.URL, Insecure: true, Interval: &metav1.Duration{Duration: 24 * time.Hour}}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "dist"}, Repositories: []string{"shrink/**"}, Mode: v1alpha1.ModeAudit}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitImages(t, ns, want)
	waitFor(t, reg, "Ready", isReady)
	old := shrinkConfirmAfter.Swap(int64(3 * time.Second))
	defer shrinkConfirmAfter.Store(old)

	truncate := func(on bool) {
		px.mu.Lock()
		defer px.mu.Unlock()
		px.keepTags = nil
		if on {
			px.keepTags = func(tags []string) []string { return tags[:min(3, len(tags))] }
		}
	}
	shrank := func(r *v1alpha1.Registry) bool {
		c := findCondition(r, v1alpha1.ReadyCondition)
		return c != nil && c.Reason == v1alpha1.ListingShrankReason && strings.Contains(c.Message, "lists 3 tags where the last listing saw 12")
	}
	truncate(true)
	requestPass(t, reg)
	waitFor(t, reg, "ListingShrank", shrank)
	waitImages(t, ns, want) // all 12 kept

	// Back to normal: the suspicion is cleared, so the next short list is held again.
	truncate(false)
	requestPass(t, reg)
	waitFor(t, reg, "Ready again", isReady)
	truncate(true)
	requestPass(t, reg)
	waitFor(t, reg, "ListingShrank again", shrank)
	waitImages(t, ns, want)

	// The failed pass is retried at once, and the retries keep everything: only a short list
	// shrinkConfirmAfter after the first confirms it.
	waitImages(t, ns, want)
	time.Sleep(3 * time.Second)
	requestPass(t, reg)
	kept := map[string]string{}
	for k, tag := range want {
		if tag == tags[0] || tag == tags[1] || tag == tags[2] {
			kept[k] = tag
		}
	}
	waitImages(t, ns, kept)
	waitFor(t, reg, "Ready after the confirmed shrink", isReady)
}

// TestStillTagged: before a digest is deleted, a tag an earlier listing saw on it and the fresh
// listing left out is HEADed again; one that still points at the digest stops the deletion. When
// the fresh listing shows every known tag, it costs no request.
func TestStillTagged(t *testing.T) {
	ctx := context.Background()
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	img := registrytest.RandomImage(t)
	d1 := dist.Push(t, "st/app", "v1", img)
	dist.Push(t, "st/app", "stable", img)
	d2 := dist.Push(t, "st/app", "v2", registrytest.RandomImage(t))
	px := newProxy(t, dist.URL)
	rc, err := registry.New(registry.Config{URL: px.URL, Insecure: true, MetricsName: "test/still-tagged"})
	if err != nil {
		t.Fatal(err)
	}
	ia := func(d string, tags ...string) *v1alpha1.ImageAttestation {
		return &v1alpha1.ImageAttestation{Spec: v1alpha1.ImageAttestationSpec{Repository: "st/app", Digest: d, Tags: tags}}
	}
	inventory := []*v1alpha1.ImageAttestation{ia(d1, "stable", "v1"), ia(d2, "v2")}
	units := [][]policy.PlanItem{{{Digest: d1}}}
	heads := func() int { px.mu.Lock(); defer px.mu.Unlock(); return px.counts["HEAD manifest"] }

	// The fresh listing shows both tags of d1: nothing to check.
	before := heads()
	full := []policy.RetentionImage{{Digest: d1, Tags: []string{"stable", "v1"}}, {Digest: d2, Tags: []string{"v2"}}}
	if tag, _, err := stillTagged(ctx, rc, "st/app", units, inventory, full); tag != "" || err != nil || heads() != before {
		t.Fatalf("full listing: tag %q, err %v, %d HEADs", tag, err, heads()-before)
	}
	// A truncated listing left "stable" out: it still points at d1, so d1 must not go.
	truncated := []policy.RetentionImage{{Digest: d1, Tags: []string{"v1"}}, {Digest: d2, Tags: []string{"v2"}}}
	tag, digest, err := stillTagged(ctx, rc, "st/app", units, inventory, truncated)
	if tag != "stable" || digest != d1 || err != nil || heads()-before != 1 {
		t.Fatalf("truncated listing: tag %q digest %s, err %v, %d HEADs; want stable, 1 HEAD", tag, digest, err, heads()-before)
	}
	// "stable" really moved to another image: d1 may go.
	dist.Push(t, "st/app", "stable", registrytest.RandomImage(t))
	if tag, _, err := stillTagged(ctx, rc, "st/app", units, inventory, truncated); tag != "" || err != nil {
		t.Fatalf("moved tag: %q, %v", tag, err)
	}
}
