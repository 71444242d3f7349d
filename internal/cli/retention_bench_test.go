package cli

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/portcullis-dev/portcullis/internal/registry"
)

// BenchmarkRetentionListing: the retention preview's listing of 5,000 tags in 50 repositories of an
// in-process registry, listWorkers repositories at a time against one at a time (the obvious
// alternative), at the highest rate a Registry may set (10,000 requests per second) so that the
// registry, not the rate limit, bounds it. Reports registry requests per tag.
func BenchmarkRetentionListing(b *testing.B) {
	const repos, tags = 50, 100
	reg := newAuthRegistry(b)
	var names []string
	for r := range repos {
		repo := fmt.Sprintf("bench/app-%02d", r)
		names = append(names, repo)
		for i := range tags {
			reg.push(b, repo, i, fmt.Sprintf("v%d", i))
		}
	}
	for _, workers := range []int{1, listWorkers} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			reg.take()
			for b.Loop() {
				rc, err := registry.New(registry.Config{URL: reg.URL, Insecure: true, RequestsPerSecond: 10000,
					Auth: authn.FromConfig(authn.AuthConfig{Username: reg.user, Password: reg.pass})})
				if err != nil {
					b.Fatal(err)
				}
				got, _, err := listRepositories(context.Background(), rc, names, workers, false, io.Discard)
				if err != nil || len(got) != repos || len(got[names[0]].Images) != tags {
					b.Fatalf("listed %d repositories (%d images in the first): %v", len(got), len(got[names[0]].Images), err)
				}
			}
			b.ReportMetric(float64(len(reg.take()))/float64(b.N*repos*tags), "requests/tag")
		})
	}
}
