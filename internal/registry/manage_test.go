package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/portcullis-dev/portcullis/internal/registry/registrytest"
)

func imageCreated(t *testing.T, created time.Time) v1.Image {
	t.Helper()
	img, err := mutate.CreatedAt(randomImage(t), v1.Time{Time: created})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestCreatedAndDeleteManifest runs against CNCF Distribution: creation times of an image, an image
// without one and an index (its newest platform image), and deletion by digest: done, then
// ErrNotFound when repeated (a resumed plan), and ErrUnsupported where deletion is switched off.
func TestCreatedAndDeleteManifest(t *testing.T) {
	ctx := context.Background()
	dist := registrytest.StartDistribution(t, registrytest.Options{})
	c, err := New(Config{URL: dist.URL, Insecure: true, MetricsName: "test/manage"})
	if err != nil {
		t.Fatal(err)
	}
	older, newer := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(2026, 6, 7, 8, 9, 10, 0, time.UTC)
	imgDigest := dist.Push(t, "team/app", "v1", imageCreated(t, newer))
	noTime := dist.Push(t, "team/app", "notime", randomImage(t))
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: imageCreated(t, older), Descriptor: v1.Descriptor{MediaType: types.DockerManifestSchema2, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: imageCreated(t, newer), Descriptor: v1.Descriptor{MediaType: types.DockerManifestSchema2, Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	), types.OCIImageIndex)
	idxDigest := dist.PushIndex(t, "team/app", "multi", idx)

	for dg, want := range map[string]time.Time{imgDigest: newer, noTime: {}, idxDigest: newer} {
		got, err := c.Created(ctx, "team/app", dg)
		if err != nil || !got.Equal(want) {
			t.Errorf("Created(%s) = %v, %v; want %v", dg, got, err, want)
		}
	}

	if err := c.DeleteManifest(ctx, "team/app", imgDigest); err != nil {
		t.Fatalf("DeleteManifest: %v", err)
	}
	if _, err := c.Resolve(ctx, "team/app", "v1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the tag of a deleted manifest still resolves: %v", err)
	}
	if err := c.DeleteManifest(ctx, "team/app", imgDigest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting it again = %v, want ErrNotFound", err)
	}
	if err := c.DeleteManifest(ctx, "team/app", "v1"); err == nil {
		t.Fatal("DeleteManifest must refuse a tag")
	}

	locked := registrytest.StartDistribution(t, registrytest.Options{NoDelete: true})
	lc, err := New(Config{URL: locked.URL, Insecure: true, MetricsName: "test/manage-locked"})
	if err != nil {
		t.Fatal(err)
	}
	dg := locked.Push(t, "team/app", "v1", randomImage(t))
	if err := lc.DeleteManifest(ctx, "team/app", dg); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("DeleteManifest with deletion off = %v, want ErrUnsupported", err)
	}
	if _, err := lc.Resolve(ctx, "team/app", "v1"); err != nil {
		t.Fatalf("the image must still be there: %v", err)
	}
}
