package controller

import (
	"context"
	"fmt"
	"testing"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

// BenchmarkListing lists a real CNCF Distribution registry of 50 repositories x 20 tags (plus one
// two-platform index per repository) through the client and listInventory the Registry controller
// uses. "first" is the first pass after a start: a new client (ping and set-up per repository) that
// knows no digest; "steady" is a pass over an unchanged registry with the client kept from earlier
// passes, knowing every digest: it skips the set-up and the GET of each index. requests/op counts HTTP
// requests seen by a proxy in front of the registry. API-server writes are not part of this listing
// (TestDiscoveryLifecycle asserts a steady pass makes none).
//
//	make test PKGS=./internal/controller TESTFLAGS='-run NONE -bench Listing -benchtime 5x'
func BenchmarkListing(b *testing.B) {
	const repos, tags = 50, 20
	dist := registrytest.StartDistribution(b, registrytest.Options{})
	for r := range repos {
		repo := fmt.Sprintf("bench/repo-%02d", r)
		for i := range tags {
			dist.Push(b, repo, fmt.Sprintf("v%d", i), registrytest.RandomImage(b))
		}
		dist.PushIndex(b, repo, "multi", registrytest.PlatformIndex(b, "linux/amd64", "linux/arm64"))
	}
	px := newProxyTB(b, dist.URL)
	newClient := func() *registry.Client {
		c, err := registry.New(registry.Config{URL: px.URL, Insecure: true, MetricsName: "bench/listing", RequestsPerSecond: 10000})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	client := newClient()
	spec := &v1alpha1.RegistrySpec{URL: px.URL, Insecure: true}
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{{Spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"**"}}}})
	ctx := context.Background()

	first, err := listInventory(ctx, client, spec, sel, nil)
	if err != nil || len(first.images) != repos*(tags+1) || len(first.failed) > 0 {
		b.Fatalf("listing: %d images, %d failed, %v", len(first.images), len(first.failed), err)
	}
	known := map[imageKey]*v1alpha1.ImageAttestation{}
	for k, img := range first.images {
		known[k] = &v1alpha1.ImageAttestation{Spec: v1alpha1.ImageAttestationSpec{Repository: k.repository, Digest: k.digest, Platforms: img.platforms}}
	}

	for _, bc := range []struct {
		name   string
		known  map[imageKey]*v1alpha1.ImageAttestation
		client func() *registry.Client
	}{{"first", nil, newClient}, {"steady", known, func() *registry.Client { return client }}} {
		b.Run(bc.name, func(b *testing.B) {
			before := total(px.snapshot())
			b.ResetTimer()
			for range b.N {
				if _, err := listInventory(ctx, bc.client(), spec, sel, bc.known); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(total(px.snapshot())-before)/float64(b.N), "requests/op")
		})
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
