// Package retention reads what a retention plan is made from: a repository's tags, digests, creation
// times and platform manifests (from the registry, or from the Registry's inventory), and what the
// cluster's workloads use. The manager's RetentionReconciler and the CLI's what-if plan from the same
// listings with the same pure policy.PlanRetention, so a preview shows what the manager would do.
package retention

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// Cache keeps what was read about digests across listings: creation times and the platform
// manifests of indexes. A digest's content never changes, so neither does the answer. Its zero
// value is ready; it is safe for concurrent use.
type Cache struct {
	created  digestCache[time.Time]
	children digestCache[[]string]
}

// FromInventory is a repository's listing as the Registry's own listing last recorded it in the
// inventory: each ImageAttestation's digest, tags and platform manifests, and the supply-chain tags
// found beside it. It costs no registry request but, once per digest (cached), the creation time. The
// Registry lists every interval, so the inventory is at most an interval old: good for planning and
// dry runs; a pass that would delete plans again from a fresh listing of the registry itself.
func FromInventory(ctx context.Context, rc *registry.Client, cache *Cache, repo string, items []*v1alpha1.ImageAttestation) (Listing, error) {
	out := Listing{Complete: true}
	accessories := map[string]*policy.RetentionImage{}
	var accOrder []string
	slices.SortFunc(items, func(a, b *v1alpha1.ImageAttestation) int { return strings.Compare(a.Spec.Digest, b.Spec.Digest) })
	for _, ia := range items {
		for _, a := range accessoriesOf(ia) {
			img, ok := accessories[a.Digest]
			if !ok {
				img = &policy.RetentionImage{Digest: a.Digest}
				accessories[a.Digest] = img
				accOrder = append(accOrder, a.Digest)
			}
			if !slices.Contains(img.Tags, a.Tag) {
				img.Tags = append(img.Tags, a.Tag)
			}
		}
		if len(ia.Spec.Tags) == 0 {
			continue // untagged since the last listing: not in a tag listing either
		}
		img := policy.RetentionImage{Digest: ia.Spec.Digest, Tags: slices.Sorted(slices.Values(ia.Spec.Tags))}
		var err error
		d := ia.Spec.Digest
		if img.Created, err = cache.created.get(d, func() (time.Time, error) { return rc.Created(ctx, repo, d) }); err != nil {
			if errors.Is(err, registry.ErrNotFound) {
				out.Complete = false // deleted since the last listing: not planned, nothing deleted
				continue
			}
			return out, err
		}
		for _, p := range ia.Spec.Platforms {
			img.Children = append(img.Children, p.Digest)
		}
		out.Images = append(out.Images, img)
	}
	for _, d := range accOrder {
		img := accessories[d]
		slices.Sort(img.Tags)
		out.Images = append(out.Images, *img)
	}
	return out, nil
}

// accessoriesOf is the supply-chain tags the Registry's listing found for ia's digest (its platform
// manifests' ones name those digests and follow them).
func accessoriesOf(ia *v1alpha1.ImageAttestation) []v1alpha1.Accessory {
	if ia.Spec.Accessories == nil {
		return nil
	}
	return ia.Spec.Accessories.Tags
}

// Listing is one listing of a repository for retention: its digests with their tags, creation
// times and platform manifests, accessories (signature, attestation, SBOM tags) as digests of their
// own. Complete is false when a tag from the tag list did not resolve (404) or a digest vanished while
// listing: a digest may then be missing a kept tag, so nothing in the repository may be deleted on
// that listing.
type Listing struct {
	Images   []policy.RetentionImage
	Complete bool
}

// List reads every tag of repo, the digest behind it, each digest's creation time (cached by digest;
// accessories need none) and, for an index, its platform manifests (cached), grouped by digest.
func List(ctx context.Context, rc *registry.Client, cache *Cache, repo string) (Listing, error) {
	out := Listing{Complete: true}
	tags, err := rc.Tags(ctx, repo)
	if err != nil {
		return out, err
	}
	byDigest := map[string]*policy.RetentionImage{}
	index := map[string]bool{}
	var order []string
	for _, tag := range tags {
		m, err := rc.Resolve(ctx, repo, tag)
		if errors.Is(err, registry.ErrNotFound) {
			out.Complete = false // deleted since the tag list was read, or a registry that answers 404 for a while
			continue
		}
		if err != nil {
			return out, err
		}
		img, ok := byDigest[m.Digest]
		if !ok {
			img = &policy.RetentionImage{Digest: m.Digest}
			byDigest[m.Digest] = img
			order = append(order, m.Digest)
			index[m.Digest] = m.IsIndex()
		}
		img.Tags = append(img.Tags, tag)
	}
	for _, d := range order {
		img := byDigest[d]
		slices.Sort(img.Tags)
		if !slices.ContainsFunc(img.Tags, func(t string) bool { _, ok := policy.AccessoryTag(t); return !ok }) {
			out.Images = append(out.Images, *img) // an accessory: it follows its subject
			continue
		}
		if img.Created, err = cache.created.get(d, func() (time.Time, error) { return rc.Created(ctx, repo, d) }); err != nil {
			if errors.Is(err, registry.ErrNotFound) {
				out.Complete = false // deleted since the last listing: not planned, nothing deleted
				continue
			}
			return out, err
		}
		if index[d] {
			if img.Children, err = cache.children.get(d, func() ([]string, error) { return childrenOf(ctx, rc, repo, d) }); err != nil {
				return out, err
			}
		}
		out.Images = append(out.Images, *img)
	}
	return out, nil
}

// SameListing reports whether two listings of a repository have the same digests with the same tags.
func SameListing(a, b []policy.RetentionImage) bool {
	index := func(l []policy.RetentionImage) map[string]string {
		m := map[string]string{}
		for _, img := range l {
			m[img.Digest] = strings.Join(img.Tags, ",")
		}
		return m
	}
	ia, ib := index(a), index(b)
	if len(ia) != len(ib) {
		return false
	}
	for d, tags := range ia {
		if ib[d] != tags {
			return false
		}
	}
	return true
}

// OutsidePolicy protects digests carrying a tag the policy does not govern (spec.tags): another
// team's tags on a shared digest are not this policy's to delete.
func OutsidePolicy(listing []policy.RetentionImage, tags v1alpha1.PatternSelector) map[string]string {
	out := map[string]string{}
	for _, img := range listing {
		for _, t := range img.Tags {
			if _, acc := policy.AccessoryTag(t); !acc && !policy.Selects(tags, t) {
				out[img.Digest] = policy.RetainedOutsidePolicy
			}
		}
	}
	return out
}

// maxCachedDigests bounds a digestCache; when full it starts afresh.
const maxCachedDigests = 20000

// digestCache keeps what was read about a digest (its creation time, an index's platform manifests):
// a digest's content never changes, so neither does the answer.
type digestCache[T any] struct {
	mu sync.Mutex
	m  map[string]T
}

// get returns the cached value for digest, or fetches and caches it (errors are not cached).
func (c *digestCache[T]) get(digest string, fetch func() (T, error)) (T, error) {
	c.mu.Lock()
	v, ok := c.m[digest]
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := fetch()
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedDigests {
		c.m = map[string]T{}
	}
	c.m[digest] = v
	return v, nil
}

// childrenOf lists an index's platform manifest digests.
func childrenOf(ctx context.Context, rc *registry.Client, repo, digest string) ([]string, error) {
	ps, err := rc.Platforms(ctx, repo, digest)
	var out []string
	for _, p := range ps {
		out = append(out, p.Digest)
	}
	return out, err
}
