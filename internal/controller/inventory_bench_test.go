package controller

import (
	"context"
	"fmt"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
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

// BenchmarkHarborListing lists 10 repositories x 50 tags of a Harbor Registry in steady state, side
// by side: "oci" resolves each tag with a HEAD through the distribution API, "harbor" reads each
// repository's tags with their digests from Harbor's artifact API (harborLister, what a Registry of
// provider Harbor uses). The Harbor API here is harbortest, which validates every request and
// response against Harbor's swagger, so its time per request is much higher than a real Harbor's;
// requests/op (distribution API and Harbor API together) is the figure that carries over.
//
//	make test PKGS=./internal/controller TESTFLAGS='-run NONE -bench HarborListing -benchtime 5x'
func BenchmarkHarborListing(b *testing.B) {
	const repos, tags = 10, 50
	dist := registrytest.StartDistribution(b, registrytest.Options{})
	px := newProxyTB(b, dist.URL)
	h := harbortest.Start(b)
	h.AddProject("bench", nil)
	u, _ := url.Parse(px.URL)
	h.Mu.Lock()
	h.V2 = httputil.NewSingleHostReverseProxy(u)
	for r := range repos {
		name := fmt.Sprintf("repo-%02d", r)
		var arts []harbortest.Artifact
		for i := range tags {
			d := dist.Push(b, "bench/"+name, fmt.Sprintf("v%d", i), registrytest.RandomImage(b))
			arts = append(arts, harbortest.Artifact{Digest: d, Tags: []string{fmt.Sprintf("v%d", i)}, PushTime: time.Now()})
		}
		h.Projects["bench"].Repositories[name] = arts
	}
	h.Mu.Unlock()
	c, err := registry.New(registry.Config{URL: h.URL, Insecure: true, MetricsName: "bench/harbor", RequestsPerSecond: 10000})
	if err != nil {
		b.Fatal(err)
	}
	hc, err := harbor.New(harbor.Config{URL: h.URL, Username: h.Username, Password: h.Password})
	if err != nil {
		b.Fatal(err)
	}
	spec := &v1alpha1.RegistrySpec{URL: h.URL, Insecure: true}
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{{Spec: v1alpha1.RepositoryPolicySpec{Repositories: []string{"**"}}}})
	ctx := context.Background()
	harborRequests := func() int {
		h.Mu.Lock()
		defer h.Mu.Unlock()
		return total(h.Requests)
	}
	for _, bc := range []struct {
		name   string
		lister func() registryLister
	}{{"oci", func() registryLister { return c }}, {"harbor", func() registryLister { return newHarborLister(c, hc) }}} {
		b.Run(bc.name, func(b *testing.B) {
			if inv, err := listInventory(ctx, bc.lister(), spec, sel, nil); err != nil || len(inv.images) != repos*tags {
				b.Fatalf("listing: %v, %v", inv, err)
			}
			before := total(px.snapshot()) + harborRequests()
			b.ResetTimer()
			for range b.N {
				if _, err := listInventory(ctx, bc.lister(), spec, sel, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(total(px.snapshot())+harborRequests()-before)/float64(b.N), "requests/op")
		})
	}
}
