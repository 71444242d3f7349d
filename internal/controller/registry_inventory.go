package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// registryLister is what a listing pass needs from a registry; *registry.Client implements it.
type registryLister interface {
	Repositories(ctx context.Context) ([]string, error)
	Tags(ctx context.Context, repository string) ([]string, error)
	Resolve(ctx context.Context, repository, tag string) (registry.Manifest, error)
	Platforms(ctx context.Context, repository, digest string) ([]registry.Platform, error)
}

var _ registryLister = (*registry.Client)(nil)

// maxTags is the most tags an ImageAttestation records (spec.tags MaxItems).
const maxTags = 256

// imageKey identifies one ImageAttestation: a digest in a repository.
type imageKey struct{ repository, digest string }

// image is what the registry says of one selected digest.
type image struct {
	mediaType string
	tags      []string
	platforms []v1alpha1.PlatformManifest
	// accessories are the supply-chain tags of the digest and its platforms, sorted by tag.
	accessories []v1alpha1.Accessory
}

// inventory is the result of listing a registry.
type inventory struct {
	repositories int
	images       map[imageKey]*image
	// failed holds the repositories whose listing failed; their ImageAttestations are kept as they
	// are, so a broken registry response never removes a verdict.
	failed map[string]error
}

// pageLister is a registry whose catalog can be read page by page and resumed (*registry.Client,
// and the Harbor lister through it).
type pageLister interface {
	RepositoryPages(ctx context.Context, after string, fn func(repos []string) error) error
}

// repoListing is what listing one repository gave: its selected digests, or why it failed (its
// ImageAttestations are then kept as they are).
type repoListing struct {
	repo   string
	images map[imageKey]*image
	err    error
}

// walk is one listing pass over a registry.
type walk struct {
	reg   registryLister
	spec  *v1alpha1.RegistrySpec
	sel   policy.Selection
	known map[imageKey]*v1alpha1.ImageAttestation // read only: indexes already known cost no GET
	// repos bounds the repositories being listed at once and requests the listing requests in flight
	// (both spec.requests.concurrency); the Registry's rate limit applies below them. A repository
	// holds its repos slot throughout and a requests slot only during each request, so neither can
	// wait on the other.
	repos, requests chan struct{}
	// knownTags holds, per repository, the tags its ImageAttestations had: a tag not among them is
	// new, and is fetched (GET) rather than resolved (HEAD) when the registry can keep the manifest
	// for the scanner.
	knownTags map[string]map[string]bool
}

// manifestFetcher is a registry that can GET a tag's manifest and keep it for the scanner
// (*registry.Client): one request instead of a HEAD now and a GET by the scanner later.
type manifestFetcher interface {
	Fetch(ctx context.Context, repository, tag string) (registry.Manifest, error)
}

// walkResult is what a walk saw of the catalog.
type walkResult struct {
	// governed holds the repositories listed (or whose listing failed) that some policy governs.
	governed map[string]bool
	// repositories counts the repositories the catalog gave after spec.repositories.
	repositories int
	// complete: the catalog was read to its end (not cut by the deadline or an error).
	complete bool
}

// run lists the registry's repositories page by page, starting after `after` (empty: from the
// start), lists up to cap(repos) governed repositories at once, and calls apply with each
// repository's listing as soon as it is done, from several goroutines at once. Whenever the run of
// catalog names whose repositories were all applied grows, progress gets the last name of the run
// and the number of repositories so far (calls are serialised per page). A catalog failure is
// returned (what was applied stays applied).
func (w *walk) run(ctx context.Context, after string, apply func(repoListing), progress func(last string, repositories int)) (walkResult, error) {
	res := walkResult{governed: map[string]bool{}}
	page := func(names []string) error {
		// Progress moves over the longest run of finished names at the page's head, so a pass cut by
		// its deadline resumes after the last repository whose whole listing was applied.
		before := res.repositories
		var pmu sync.Mutex
		finished, counted := make([]bool, len(names)), make([]bool, len(names))
		next, repositories := 0, before
		finish := func(i int) {
			pmu.Lock()
			defer pmu.Unlock()
			finished[i] = true
			moved := false
			for next < len(names) && finished[next] {
				if counted[next] {
					repositories++
				}
				next, moved = next+1, true
			}
			if moved {
				progress(names[next-1], repositories)
			}
		}
		var wg sync.WaitGroup
		for i, repo := range names {
			if len(w.spec.Repositories.Names) == 0 && !policy.Selects(w.spec.Repositories.PatternSelector, repo) {
				finish(i)
				continue
			}
			res.repositories++
			pmu.Lock()
			counted[i] = true
			pmu.Unlock()
			if !w.sel.Repository(repo) {
				finish(i)
				continue
			}
			res.governed[repo] = true
			if ctx.Err() != nil { // the pass's deadline passed: the rest fail alike, without requests
				apply(repoListing{repo: repo, err: fmt.Errorf("%w: %w", registry.ErrTimeout, ctx.Err())})
				continue
			}
			select {
			case w.repos <- struct{}{}:
			case <-ctx.Done():
				apply(repoListing{repo: repo, err: fmt.Errorf("%w: %w", registry.ErrTimeout, ctx.Err())})
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				images, err := w.repository(ctx, repo)
				<-w.repos
				apply(repoListing{repo: repo, images: images, err: err})
				if ctx.Err() == nil {
					finish(i) // a repository cut by the deadline is listed again by the next pass
				}
			}()
		}
		wg.Wait()
		return ctx.Err()
	}
	if names := w.spec.Repositories.Names; len(names) > 0 {
		err := page(names)
		res.complete = err == nil
		return res, err
	}
	var err error
	if pl, ok := w.reg.(pageLister); ok {
		err = pl.RepositoryPages(ctx, after, page)
	} else {
		var all []string
		if all, err = w.reg.Repositories(ctx); err == nil {
			err = page(all)
		}
	}
	res.complete = err == nil
	return res, err
}

// listInventory lists the whole registry into one inventory (no resume, nothing applied on the
// way): the listing the benchmarks and tests compare against. A catalog failure fails it.
func listInventory(ctx context.Context, reg registryLister, spec *v1alpha1.RegistrySpec, sel policy.Selection,
	known map[imageKey]*v1alpha1.ImageAttestation) (*inventory, error) {
	inv := &inventory{images: map[imageKey]*image{}, failed: map[string]error{}}
	var mu sync.Mutex
	w := newWalk(reg, spec, sel, known, defaultConcurrency)
	res, err := w.run(ctx, "", func(l repoListing) {
		mu.Lock()
		defer mu.Unlock()
		if l.err != nil {
			inv.failed[l.repo] = l.err
			return
		}
		maps.Copy(inv.images, l.images)
	}, func(string, int) {})
	inv.repositories = res.repositories
	if err != nil && ctx.Err() == nil {
		return nil, err
	}
	return inv, nil
}

func newWalk(reg registryLister, spec *v1alpha1.RegistrySpec, sel policy.Selection, known map[imageKey]*v1alpha1.ImageAttestation, concurrency int) *walk {
	w := &walk{reg: reg, spec: spec, sel: sel, known: known,
		repos: make(chan struct{}, concurrency), requests: make(chan struct{}, concurrency), knownTags: map[string]map[string]bool{}}
	for k, ia := range known {
		if w.knownTags[k.repository] == nil {
			w.knownTags[k.repository] = map[string]bool{}
		}
		for _, t := range ia.Spec.Tags {
			w.knownTags[k.repository][t] = true
		}
	}
	return w
}

// request runs one listing request in a requests slot.
func (w *walk) request(ctx context.Context, do func() error) error {
	select {
	case w.requests <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", registry.ErrTimeout, ctx.Err())
	}
	defer func() { <-w.requests }()
	return do()
}

// repository lists repo's selected digests: one tags request, one HEAD per selected tag (up to
// cap(requests) at once across the pass), and a GET only for an index not seen before. A
// repository or tag that vanished meanwhile (404) is simply absent; any other error fails the
// repository.
func (w *walk) repository(ctx context.Context, repo string) (map[imageKey]*image, error) {
	var tags []string
	err := w.request(ctx, func() (err error) { tags, err = w.reg.Tags(ctx, repo); return err })
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var selected, accessories []string
	for _, tag := range tags {
		switch {
		case supplyChainTag.MatchString(tag):
			accessories = append(accessories, tag)
		case w.sel.Tag(repo, tag):
			selected = append(selected, tag)
		}
	}
	resolved, err := w.resolve(ctx, repo, selected, true)
	if err != nil {
		return nil, err
	}
	found := map[imageKey]*image{}
	for i, tag := range selected {
		m := resolved[i]
		if m.Digest == "" {
			continue
		}
		k := imageKey{repo, m.Digest}
		img := found[k]
		if img == nil {
			img = &image{mediaType: m.MediaType}
			found[k] = img
			if m.IsIndex() {
				if ia := w.known[k]; ia != nil && len(ia.Spec.Platforms) > 0 {
					img.platforms = ia.Spec.Platforms
				} else if img.platforms, err = platformsOf(ctx, w.reg, repo, m.Digest); err != nil {
					return nil, err
				}
			}
		}
		img.tags = append(img.tags, tag)
	}
	if err := w.accessories(ctx, repo, accessories, found); err != nil {
		return nil, err
	}
	for _, img := range found {
		sort.Strings(img.tags)
		img.tags = slices.Compact(img.tags) // a registry whose paging repeats a tag
		if len(img.tags) > maxTags {
			img.tags = img.tags[:maxTags] // the API's bound; the digest stays selected
		}
	}
	return found, nil
}

// resolve HEADs each tag, up to cap(requests) at once across the pass; with images, a tag not
// known before is fetched instead (see manifestFetcher). A tag deleted since the tag list was read
// resolves to the zero Manifest.
func (w *walk) resolve(ctx context.Context, repo string, tags []string, images bool) ([]registry.Manifest, error) {
	fetcher, canFetch := w.reg.(manifestFetcher)
	resolved := make([]registry.Manifest, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cap(w.requests))
	for i, tag := range tags {
		g.Go(func() error {
			return w.request(gctx, func() error {
				resolve := w.reg.Resolve
				if images && canFetch && !w.knownTags[repo][tag] {
					resolve = fetcher.Fetch
				}
				m, err := resolve(gctx, repo, tag)
				if errors.Is(err, registry.ErrNotFound) {
					return nil
				}
				resolved[i] = m
				return err
			})
		})
	}
	return resolved, g.Wait()
}

// accessories resolves the supply-chain tags whose subject is a found digest or one of its
// platform manifests (one HEAD each; the others are not looked at) and records them on the images.
func (w *walk) accessories(ctx context.Context, repo string, tags []string, found map[imageKey]*image) error {
	owners := map[string][]*image{}
	for k, img := range found {
		owners[k.digest] = append(owners[k.digest], img)
		for _, p := range img.platforms {
			owners[p.Digest] = append(owners[p.Digest], img)
		}
	}
	var wanted []string
	for _, t := range tags {
		if len(owners[accessorySubject(t)]) > 0 {
			wanted = append(wanted, t)
		}
	}
	resolved, err := w.resolve(ctx, repo, wanted, false)
	if err != nil {
		return err
	}
	for i, t := range wanted {
		if resolved[i].Digest == "" {
			continue
		}
		for _, img := range owners[accessorySubject(t)] {
			img.accessories = append(img.accessories, v1alpha1.Accessory{Tag: t, Digest: resolved[i].Digest})
		}
	}
	for _, img := range found {
		slices.SortFunc(img.accessories, func(a, b v1alpha1.Accessory) int { return strings.Compare(a.Tag, b.Tag) })
		img.accessories = slices.CompactFunc(img.accessories, func(a, b v1alpha1.Accessory) bool { return a.Tag == b.Tag })
		if len(img.accessories) > maxAccessories {
			img.accessories = img.accessories[:maxAccessories]
		}
	}
	return nil
}

// maxAccessories is the API's bound on spec.accessories.tags.
const maxAccessories = 272

// accessorySubject is the digest a supply-chain tag names: `sha256-<hex>.sig` names `sha256:<hex>`.
func accessorySubject(tag string) string {
	base, _, _ := strings.Cut(tag, ".")
	return strings.Replace(base, "-", ":", 1)
}

// sameAccessories reports whether the recorded accessories are the listed ones.
func sameAccessories(recorded *v1alpha1.Accessories, listed []v1alpha1.Accessory) bool {
	return recorded != nil && slices.Equal(recorded.Tags, listed)
}

func platformsOf(ctx context.Context, reg registryLister, repo, digest string) ([]v1alpha1.PlatformManifest, error) {
	ps, err := reg.Platforms(ctx, repo, digest)
	if err != nil {
		return nil, err
	}
	if len(ps) > 64 {
		ps = ps[:64] // the API's bound; an index of more platforms is listed by its first 64
	}
	out := make([]v1alpha1.PlatformManifest, 0, len(ps))
	for _, p := range ps {
		out = append(out, v1alpha1.PlatformManifest{Digest: p.Digest, Platform: p.Platform})
	}
	return out, nil
}

// inventoryChanges counts the writes applyInventory made.
type inventoryChanges struct{ created, updated, deleted, kept int }

func (c inventoryChanges) any() bool { return c.created+c.updated+c.deleted > 0 }

func (c *inventoryChanges) add(d inventoryChanges) {
	c.created, c.updated, c.deleted, c.kept = c.created+d.created, c.updated+d.updated, c.deleted+d.deleted, c.kept+d.kept
}

// applyInventory makes the Registry's ImageAttestations match inv: create new digests, update tags
// that moved, delete digests that are gone. Repositories in inv.failed are left untouched. An
// unchanged inventory makes no write. existing is read only (it may hold the cache's own objects).
func (r *RegistryReconciler) applyInventory(ctx context.Context, obj *v1alpha1.Registry, existing []*v1alpha1.ImageAttestation, inv *inventory,
	policies []v1alpha1.RepositoryPolicy) (inventoryChanges, error) {
	var ch inventoryChanges
	var errs []error
	moves := movedTags(obj, existing, inv, policies, time.Now())
	known := map[imageKey]bool{}
	for _, ia := range existing {
		known[imageKey{ia.Spec.Repository, ia.Spec.Digest}] = true
	}
	// Where tags moved to is written first: if that fails, the ImageAttestations they moved from keep
	// them, and the next pass sees the moves again instead of losing them.
	movesLost := false
	for k, img := range inv.images {
		if known[k] {
			continue
		}
		ia := newImageAttestation(obj, k, img)
		ia.Spec.MovedTags = withMoves(nil, moves[k])
		if err := controllerutil.SetControllerReference(obj, ia, r.Scheme()); err != nil {
			return ch, err
		}
		err := r.Create(ctx, ia)
		switch {
		case err == nil:
			countMoves(obj, k.repository, ia.Spec.MovedTags, policies)
		case apierrors.IsAlreadyExists(err) && len(moves[k]) == 0:
		default: // failed, or already there (a cache behind our writes) with moves to record: next pass
			errs = append(errs, fmt.Errorf("creating ImageAttestation for %s@%s: %w", k.repository, k.digest, err))
			movesLost = movesLost || len(moves[k]) > 0
			continue
		}
		ch.created++
		ch.kept++
	}
	order := make([]int, len(existing))
	for i := range order {
		order[i] = i
	}
	receives := func(i int) bool {
		ia := existing[i]
		return len(newMoves(ia.Spec.MovedTags, moves[imageKey{ia.Spec.Repository, ia.Spec.Digest}])) > 0
	}
	sort.SliceStable(order, func(a, b int) bool { return receives(order[a]) && !receives(order[b]) })
	for _, i := range order {
		ia := existing[i]
		k := imageKey{ia.Spec.Repository, ia.Spec.Digest}
		if _, failed := inv.failed[k.repository]; failed {
			ch.kept++
			continue
		}
		fresh := newMoves(ia.Spec.MovedTags, moves[k])
		if movesLost && len(fresh) == 0 {
			ch.kept++ // a move could not be recorded: leave the rest as it is until the next pass
			continue
		}
		img, ok := inv.images[k]
		if !ok {
			if err := r.Delete(ctx, ia); client.IgnoreNotFound(err) != nil {
				errs = append(errs, fmt.Errorf("deleting ImageAttestation %s: %w", ia.Name, err))
			} else {
				ch.deleted++
			}
			continue
		}
		ch.kept++
		if slices.Equal(ia.Spec.Tags, img.tags) && ia.Spec.MediaType == img.mediaType && len(ia.Spec.Platforms) == len(img.platforms) &&
			len(fresh) == 0 && sameAccessories(ia.Spec.Accessories, img.accessories) {
			continue
		}
		base := ia
		ia = ia.DeepCopy() // existing holds the cache's objects: never write into them
		ia.Spec.Tags, ia.Spec.MediaType, ia.Spec.Platforms = img.tags, img.mediaType, img.platforms
		ia.Spec.Accessories = &v1alpha1.Accessories{Tags: img.accessories}
		ia.Spec.MovedTags = withMoves(ia.Spec.MovedTags, fresh)
		if err := r.Patch(ctx, ia, client.MergeFrom(base)); err != nil {
			errs = append(errs, fmt.Errorf("updating ImageAttestation %s: %w", ia.Name, err))
			movesLost = movesLost || len(fresh) > 0
		} else {
			ch.updated++
			countMoves(obj, k.repository, fresh, policies)
		}
	}
	if len(errs) > 0 {
		ctrl.LoggerFrom(ctx).Error(errors.Join(errs...), "writing ImageAttestations")
	}
	return ch, errors.Join(errs...)
}

func newImageAttestation(obj *v1alpha1.Registry, k imageKey, img *image) *v1alpha1.ImageAttestation {
	return &v1alpha1.ImageAttestation{
		ObjectMeta: metav1.ObjectMeta{
			Name:      imageAttestationName(obj.Name, k.repository, k.digest),
			Namespace: obj.Namespace,
			Labels: map[string]string{
				v1alpha1.RegistryLabel:       labelValue(obj.Name),
				v1alpha1.RepositoryHashLabel: shortHash(k.repository, 16),
			},
		},
		Spec: v1alpha1.ImageAttestationSpec{
			RegistryRef: v1alpha1.LocalObjectReference{Name: obj.Name},
			Repository:  k.repository,
			Digest:      k.digest,
			Tags:        img.tags,
			MediaType:   img.mediaType,
			Platforms:   img.platforms,
			Accessories: &v1alpha1.Accessories{Tags: img.accessories},
		},
	}
}

// supplyChainTag matches the tags that carry signatures, attestations and SBOMs rather than images:
// cosign's tag scheme (`sha256-<hex>.sig`, `.att`, `.sbom`) and the OCI 1.1 referrers fallback tag
// (`sha256-<hex>`, distribution-spec "Referrers Tag Schema"). They are never images to evaluate.
var supplyChainTag = regexp.MustCompile(`^(sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})(\.(sig|att|sbom))?$`)

// imageAttestationName is v1alpha1.ImageAttestationName (the admission webhook finds a digest's
// ImageAttestation by the same name).
func imageAttestationName(registryName, repository, digest string) string {
	return v1alpha1.ImageAttestationName(registryName, repository, digest)
}

func shortHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

// labelValue is name when it fits a label value (63 characters), else a hash of it.
func labelValue(name string) string { return v1alpha1.RegistryLabelValue(name) }
