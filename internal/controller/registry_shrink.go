package controller

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// errListingShrank marks a listing held back because it came back far smaller than the last one
// (reason ListingShrank).
var errListingShrank = errors.New("the listing came back far smaller than the last one")

// Thresholds of a suspicious shrink: under half of what the last listing saw, from at least this
// many tags in a repository, or repositories in the catalog. Smaller ones legitimately halve.
const (
	shrinkMinRepositoryTags = 10
	shrinkMinCatalog        = 4
)

// halved reports a suspicious shrink: now is under half of before, which was at least min.
func halved(before, now, min int) bool { return before >= min && now*2 < before }

// catalogShrank returns an error wrapping errListingShrank when the catalog just read holds under
// half of the repositories the previous listing counted (status.repositoryCount) and some
// ImageAttestations would be deleted for it. A token whose scope shrank, a proxy or a registry bug
// can return a short catalog; deleting on it would lose every verdict. The next pass compares with
// the smaller count this pass records, so a real shrink goes through one interval later.
func catalogShrank(before, now int32, wouldDelete int) error {
	if wouldDelete == 0 || !halved(int(before), int(now), shrinkMinCatalog) {
		return nil
	}
	return fmt.Errorf("%w: the catalog lists %d repositories where the last listing saw %d; their %d images are kept until the next listing confirms it",
		errListingShrank, now, before, wouldDelete)
}

// shrinkConfirmAfter is how long after a held listing another one must say the same to confirm it
// (nanoseconds; a variable for tests). A held pass fails and is retried within seconds: the retry
// alone must not confirm what may be one flaky proxy.
var shrinkConfirmAfter atomic.Int64

func init() { shrinkConfirmAfter.Store(int64(time.Minute)) }

// shrinkGuard holds back a repository whose tag list came back with under half of the tags its
// ImageAttestations record, until a listing at least shrinkConfirmAfter later says the same (it is
// then applied). It remembers, per Registry and repository, since when the listings were short; a
// restart forgets, which only delays a real shrink.
type shrinkGuard struct {
	held sync.Map // "namespace/name\x00repository" → time.Time of the first short listing
}

// tags returns an error wrapping errListingShrank to hold the repository's listing back, or nil to
// apply it.
func (g *shrinkGuard) tags(obj *v1alpha1.Registry, repo string, existing []*v1alpha1.ImageAttestation, listed map[imageKey]*image) error {
	key := obj.Namespace + "/" + obj.Name + "\x00" + repo
	before, now := 0, 0
	for _, ia := range existing {
		before += len(ia.Spec.Tags)
	}
	for _, img := range listed {
		now += len(img.tags)
	}
	if !halved(before, now, shrinkMinRepositoryTags) {
		g.held.Delete(key)
		return nil
	}
	since, _ := g.held.LoadOrStore(key, time.Now())
	wait := time.Duration(shrinkConfirmAfter.Load())
	if time.Since(since.(time.Time)) >= wait {
		g.held.Delete(key)
		return nil // short in every listing for that long: confirmed
	}
	return fmt.Errorf("%w: %s lists %d tags where the last listing saw %d; its images are kept until a listing %s later confirms it",
		errListingShrank, repo, now, before, wait)
}
