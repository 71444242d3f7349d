package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// listing is the bookkeeping of one Registry pass: it writes each repository's ImageAttestations as
// soon as that repository is listed (so verdicts start while the rest of the registry is still
// being listed), counts the writes, and tracks where a listing cut by spec.timeout resumes.
type listing struct {
	r        *RegistryReconciler
	ctx      context.Context // for writes: not the pass's deadline, so a write started is finished
	obj      *v1alpha1.Registry
	policies []v1alpha1.RepositoryPolicy
	byRepo   map[string][]*v1alpha1.ImageAttestation
	existing int
	walk     *walk
	// after is where this pass starts in the catalog (status.listing.continueAfter), "" from the start.
	after   string
	resumed *v1alpha1.ListingProgress

	mu      sync.Mutex
	changes inventoryChanges
	errs    []error
	failed  map[string]error
	next    *v1alpha1.ListingProgress
}

// listing prepares a pass over reg for obj with its ImageAttestations and policies.
func (r *RegistryReconciler) listing(obj *v1alpha1.Registry, existing []*v1alpha1.ImageAttestation, policies []v1alpha1.RepositoryPolicy,
	reg registryLister) *listing {
	l := &listing{r: r, obj: obj, policies: policies, byRepo: map[string][]*v1alpha1.ImageAttestation{}, existing: len(existing),
		failed: map[string]error{}}
	known := make(map[imageKey]*v1alpha1.ImageAttestation, len(existing))
	for _, ia := range existing {
		known[imageKey{ia.Spec.Repository, ia.Spec.Digest}] = ia
		l.byRepo[ia.Spec.Repository] = append(l.byRepo[ia.Spec.Repository], ia)
	}
	if p := obj.Status.Listing; p != nil && p.ContinueAfter != "" && len(obj.Spec.Repositories.Names) == 0 {
		l.after, l.resumed = p.ContinueAfter, p.DeepCopy()
	}
	l.walk = newWalk(reg, &obj.Spec, policy.NewSelection(policies), known, registryConcurrency(obj))
	return l
}

// apply writes one listed repository's ImageAttestations (create, update, delete within the
// repository). A repository whose listing failed keeps its ImageAttestations. Safe for concurrent
// use.
func (l *listing) apply(rl repoListing) {
	if rl.err != nil {
		l.mu.Lock()
		l.failed[rl.repo] = rl.err
		l.mu.Unlock()
		return
	}
	inv := &inventory{images: rl.images, failed: map[string]error{}}
	if inv.images == nil {
		inv.images = map[imageKey]*image{}
	}
	if err := l.r.shrinks.tags(l.obj, rl.repo, l.byRepo[rl.repo], inv.images); err != nil {
		l.mu.Lock()
		l.failed[rl.repo] = err // its ImageAttestations are kept until a listing confirms it
		l.mu.Unlock()
		return
	}
	ch, err := l.r.applyInventory(l.ctx, l.obj, l.byRepo[rl.repo], inv, l.policies)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes.add(ch)
	if err != nil {
		l.errs = append(l.errs, err)
	}
}

// progress records that the catalog was done up to last, with repositories counted so far.
func (l *listing) progress(last string, repositories int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	started := metav1.Now()
	if l.resumed != nil && l.resumed.StartedAt != nil {
		started = *l.resumed.StartedAt
	}
	l.next = &v1alpha1.ListingProgress{ContinueAfter: truncate(last, 256), StartedAt: &started,
		Repositories: l.resumedRepositories() + int32(repositories)}
}

// result returns the writes made, their errors, and the repositories whose listing failed.
func (l *listing) result() (inventoryChanges, error, map[string]error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changes, errors.Join(l.errs...), l.failed
}

// vanished are the ImageAttestations of repositories that the pass did not find governed: gone
// from the catalog or out of every policy's scope. A resumed pass saw only the names after `after`,
// so the repositories up to it are left for a pass that reads the catalog from the start.
func (l *listing) vanished(governed map[string]bool) []*v1alpha1.ImageAttestation {
	var out []*v1alpha1.ImageAttestation
	for repo, ias := range l.byRepo {
		if !governed[repo] && (l.after == "" || repo > l.after) {
			out = append(out, ias...)
		}
	}
	return out
}

// resumable reports whether a pass cut by its deadline got further than it started, so the next
// pass should resume rather than start over.
func (l *listing) resumable(passCtx context.Context) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Is(passCtx.Err(), context.DeadlineExceeded) && l.next != nil && l.next.ContinueAfter != l.after
}

// resumedRepositories is how many repositories the listing being resumed had covered before.
func (l *listing) resumedRepositories() int32 {
	if l.resumed == nil {
		return 0
	}
	return l.resumed.Repositories
}

// imageCount is how many ImageAttestations the Registry keeps after the writes.
func (l *listing) imageCount(ch inventoryChanges) int {
	return l.existing + ch.created - ch.deleted
}

// registryConcurrency is spec.requests.concurrency with its default.
func registryConcurrency(obj *v1alpha1.Registry) int {
	if rq := obj.Spec.Requests; rq != nil && rq.Concurrency != nil && *rq.Concurrency > 0 {
		return int(*rq.Concurrency)
	}
	return defaultConcurrency
}

// relistRepository lists one repository of obj now and applies it, as a pass does for each
// repository (tags moved between digests are recorded, the shrink guard holds): what a push that
// moved a tag, or a tag delete, asks for. It costs one tags request and one HEAD per selected tag.
func (r *RegistryReconciler) relistRepository(ctx context.Context, obj *v1alpha1.Registry, repo string) error {
	lister, o, ok, err := r.access.client(ctx, obj)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("the Registry %s/%s cannot be reached as configured: %s", obj.Namespace, obj.Name, o.message)
	}
	policies := &v1alpha1.RepositoryPolicyList{}
	if err := r.List(ctx, policies, client.InNamespace(obj.Namespace), client.MatchingFields{indexRegistryRef: obj.Name}); err != nil {
		return err
	}
	all, err := r.inventory().collect(ctx, obj.Namespace, obj.Name)
	if err != nil {
		return err
	}
	var existing []*v1alpha1.ImageAttestation
	for _, ia := range all {
		if ia.Spec.Repository == repo {
			existing = append(existing, ia)
		}
	}
	var reg registryLister = lister
	if obj.Spec.Provider == v1alpha1.ProviderHarbor && obj.Spec.SecretRef != nil {
		hc, err := r.access.harbor(ctx, obj)
		if err != nil {
			return err
		}
		reg = newHarborLister(lister, hc)
	}
	l := r.listing(obj, existing, policies.Items, reg)
	l.ctx = ctx
	images, err := l.walk.repository(registry.WithBackground(ctx), repo)
	l.apply(repoListing{repo: repo, images: images, err: err})
	_, werr, failed := l.result()
	return errors.Join(err, werr, failed[repo])
}
