package controller

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// TestListingResumesAfterTimeout: a registry too slow to list within spec.timeout is still listed
// whole. Each pass writes the ImageAttestations of the repositories it listed, records where it
// stopped in status.listing, and the next pass resumes the catalog there (`last=`) instead of
// starting over, which would never finish.
func TestListingResumesAfterTimeout(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	px := newProxy(t, dist.URL)
	const repos = 10
	want := map[string]string{}
	for i := range repos {
		repo := fmt.Sprintf("svc-%02d", i)
		want[repo+"@"+dist.Push(t, repo, "v1", registrytest.RandomImage(t))] = "v1"
	}
	// One repository at a time, each tag list held 400 ms: a 1 s pass lists two or three.
	px.mu.Lock()
	px.slowPath, px.slowBy = "/tags/list", 400*time.Millisecond
	px.mu.Unlock()
	one := int32(1)
	reg := &v1alpha1.Registry{ObjectMeta: metav1.ObjectMeta{Name: "slow", Namespace: ns}, Spec: v1alpha1.RegistrySpec{
		URL: px.URL, Insecure: true, Interval: &metav1.Duration{Duration: time.Hour}, Timeout: &metav1.Duration{Duration: time.Second},
		Requests: &v1alpha1.RequestBudget{Concurrency: &one},
	}}
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "slow"}, Repositories: []string{"**"},
	}}
	for _, o := range []client.Object{pol, reg} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	waitImages(t, ns, want)
	done := waitFor(t, reg, "Ready after resumed passes", func(r *v1alpha1.Registry) bool {
		return isReady(r) && r.Status.Listing == nil && r.Status.RepositoryCount == repos && r.Status.ImageCount == repos
	})
	px.mu.Lock()
	lasts := slices.Clone(px.catalogLast)
	px.mu.Unlock()
	resumed := slices.DeleteFunc(slices.Clone(lasts), func(l string) bool { return l == "" })
	if len(resumed) < 2 || !slices.IsSorted(resumed) {
		t.Fatalf("catalog requests by last=%q: want at least two resumed passes, each further on", lasts)
	}
	if n := px.snapshot()["GET tags"]; n > repos+len(lasts) {
		t.Fatalf("%d tag lists for %d repositories in %d passes: listings started over", n, repos, len(lasts))
	}
	if done.Status.LastSyncTime == nil {
		t.Fatal("no lastSyncTime")
	}
}
