package controller

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// governedRepositories lists, sorted, the repositories of the policy's Registry that it governs, as
// the Registry's inventory (its ImageAttestations) knows them.
func (r *RetentionReconciler) governedRepositories(ctx context.Context, pol *v1alpha1.RepositoryPolicy) ([]string, error) {
	list := &v1alpha1.ImageAttestationList{}
	if err := r.List(ctx, list, client.InNamespace(pol.Namespace), client.MatchingFields{indexRegistryRef: pol.Spec.RegistryRef.Name}); err != nil {
		return nil, fmt.Errorf("listing ImageAttestations: %w", err)
	}
	set := map[string]bool{}
	for _, ia := range list.Items {
		if policy.MatchAny(pol.Spec.Repositories, ia.Spec.Repository) {
			set[ia.Spec.Repository] = true
		}
	}
	repos := make([]string, 0, len(set))
	for repo := range set {
		repos = append(repos, repo)
	}
	slices.Sort(repos)
	return repos, nil
}

// list reads every tag of repo, the digest behind it, and each digest's creation time (cached by
// digest; accessories need none), grouped by digest.
func (r *RetentionReconciler) list(ctx context.Context, rc *registry.Client, repo string) ([]policy.RetentionImage, error) {
	tags, err := rc.Tags(ctx, repo)
	if err != nil {
		return nil, err
	}
	byDigest := map[string]*policy.RetentionImage{}
	var order []string
	for _, tag := range tags {
		m, err := rc.Resolve(ctx, repo, tag)
		if errors.Is(err, registry.ErrNotFound) {
			continue // deleted since the tag list was read
		}
		if err != nil {
			return nil, err
		}
		img, ok := byDigest[m.Digest]
		if !ok {
			img = &policy.RetentionImage{Digest: m.Digest}
			byDigest[m.Digest] = img
			order = append(order, m.Digest)
		}
		img.Tags = append(img.Tags, tag)
	}
	out := make([]policy.RetentionImage, 0, len(order))
	for _, d := range order {
		img := byDigest[d]
		slices.Sort(img.Tags)
		accessory := slices.ContainsFunc(img.Tags, func(t string) bool { _, ok := policy.AccessoryTag(t); return ok })
		if !accessory {
			created, err := r.created.get(ctx, rc, repo, d)
			if err != nil {
				return nil, err
			}
			img.Created = created
		}
		out = append(out, *img)
	}
	return out, nil
}

// sameListing reports whether two listings of a repository have the same digests with the same tags.
func sameListing(a, b []policy.RetentionImage) bool {
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

// outsidePolicy protects digests carrying a tag the policy does not govern (spec.tags): another
// team's tags on a shared digest are not this policy's to delete.
func outsidePolicy(listing []policy.RetentionImage, tags v1alpha1.PatternSelector) map[string]string {
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

func retentionItem(repo string, it policy.PlanItem, action string) v1alpha1.RetentionItem {
	return v1alpha1.RetentionItem{Repository: repo, Digest: it.Digest, Tags: it.Tags[:min(len(it.Tags), maxRetentionItemTags)],
		Action: action, Reason: it.Reason}
}

// registryHost is the host[:port] of the Registry's URL, as image references name it.
func registryHost(reg *v1alpha1.Registry) string {
	u, err := url.Parse(reg.Spec.URL)
	if err != nil {
		return ""
	}
	return u.Host
}

// createdTimes caches image creation times by digest (a digest's content never changes).
type createdTimes struct {
	mu sync.Mutex
	m  map[string]time.Time
}

const maxCreatedTimes = 20000

func (c *createdTimes) get(ctx context.Context, rc *registry.Client, repo, digest string) (time.Time, error) {
	c.mu.Lock()
	t, ok := c.m[digest]
	c.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := rc.Created(ctx, repo, digest)
	if err != nil {
		return time.Time{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCreatedTimes {
		c.m = map[string]time.Time{}
	}
	c.m[digest] = t
	return t, nil
}
