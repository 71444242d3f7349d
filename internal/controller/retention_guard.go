package controller

import (
	"context"
	"errors"
	"fmt"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// tagsShrank reports whether the fresh listing of a repository holds under half the tags the
// Registry's earlier listings recorded in its ImageAttestations (inventory): a tags/list cut short
// by a proxy, a token whose scope shrank or a registry bug must never cost a kept tag, so a deleting
// pass deletes nothing in that repository until a listing confirms the smaller count.
func tagsShrank(inventory []*v1alpha1.ImageAttestation, fresh []policy.RetentionImage) (before, now int, shrank bool) {
	for _, ia := range inventory {
		before += len(ia.Spec.Tags)
	}
	for _, img := range fresh {
		now += len(img.Tags)
	}
	return before, now, halved(before, now, shrinkMinRepositoryTags) // the Registry listing's rule
}

// stillTagged HEADs again, before a digest is deleted, every tag an earlier listing saw on it that
// the fresh listing does not show on it. A tag that still resolves to the digest means the fresh
// listing missed it (truncated), so nothing of the repository may be deleted: it returns that tag.
// A tag now elsewhere or gone is what it seems. The common case, where the fresh listing shows every
// tag the inventory knew, costs no request.
func stillTagged(ctx context.Context, rc *registry.Client, repo string, units [][]policy.PlanItem,
	inventory []*v1alpha1.ImageAttestation, fresh []policy.RetentionImage) (tag, digest string, err error) {
	seen := map[string][]string{}
	for _, ia := range inventory {
		seen[ia.Spec.Digest] = ia.Spec.Tags
	}
	shown := map[[2]string]bool{}
	for _, img := range fresh {
		for _, t := range img.Tags {
			shown[[2]string{img.Digest, t}] = true
		}
	}
	for _, u := range units {
		for _, it := range u {
			for _, t := range seen[it.Digest] {
				if shown[[2]string{it.Digest, t}] {
					continue
				}
				m, err := rc.Resolve(ctx, repo, t)
				switch {
				case errors.Is(err, registry.ErrNotFound):
					continue
				case err != nil:
					return "", "", fmt.Errorf("checking tag %s:%s again before deleting: %w", repo, t, err)
				case m.Digest == it.Digest:
					return t, it.Digest, nil
				}
			}
		}
	}
	return "", "", nil
}
