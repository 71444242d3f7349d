package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

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
}

// inventory is the result of listing a registry.
type inventory struct {
	repositories int
	images       map[imageKey]*image
	// failed holds the repositories whose listing failed; their ImageAttestations are kept as they
	// are, so a broken registry response never removes a verdict.
	failed map[string]error
}

// listInventory lists the repositories of the Registry, and for each repository some policy governs,
// the tags it selects and their digests. known holds the ImageAttestations that exist, so that an
// index already known costs no GET for its platforms. A catalog failure fails the whole pass.
func listInventory(ctx context.Context, reg registryLister, spec *v1alpha1.RegistrySpec, sel policy.Selection,
	known map[imageKey]*v1alpha1.ImageAttestation) (*inventory, error) {
	repos := spec.Repositories.Names
	if len(repos) == 0 {
		all, err := reg.Repositories(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range all {
			if policy.Selects(spec.Repositories.PatternSelector, r) {
				repos = append(repos, r)
			}
		}
	}
	inv := &inventory{repositories: len(repos), images: map[imageKey]*image{}, failed: map[string]error{}}
	for i, repo := range repos {
		if !sel.Repository(repo) {
			continue
		}
		err := listRepository(ctx, reg, repo, sel, known, inv)
		if err == nil {
			continue
		}
		inv.failed[repo] = err
		if ctx.Err() != nil { // the pass's deadline passed: the rest fail alike, without requests
			for _, rest := range repos[i+1:] {
				if sel.Repository(rest) {
					inv.failed[rest] = err
				}
			}
			break
		}
	}
	return inv, nil
}

// listRepository adds repo's selected digests to inv: one tags request, one HEAD per selected tag,
// and a GET only for an index not seen before. A repository or tag that vanished meanwhile (404) is
// simply absent; any other error leaves inv without this repository's images.
func listRepository(ctx context.Context, reg registryLister, repo string, sel policy.Selection,
	known map[imageKey]*v1alpha1.ImageAttestation, inv *inventory) error {
	tags, err := reg.Tags(ctx, repo)
	if errors.Is(err, registry.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	found := map[imageKey]*image{}
	for _, tag := range tags {
		if supplyChainTag.MatchString(tag) || !sel.Tag(repo, tag) {
			continue
		}
		m, err := reg.Resolve(ctx, repo, tag)
		if errors.Is(err, registry.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		k := imageKey{repo, m.Digest}
		img := found[k]
		if img == nil {
			img = &image{mediaType: m.MediaType}
			found[k] = img
			if m.IsIndex() {
				if ia := known[k]; ia != nil && len(ia.Spec.Platforms) > 0 {
					img.platforms = ia.Spec.Platforms
				} else if img.platforms, err = platformsOf(ctx, reg, repo, m.Digest); err != nil {
					return err
				}
			}
		}
		img.tags = append(img.tags, tag)
	}
	for k, img := range found {
		sort.Strings(img.tags)
		img.tags = slices.Compact(img.tags) // a registry whose paging repeats a tag
		if len(img.tags) > maxTags {
			img.tags = img.tags[:maxTags] // the API's bound; the digest stays selected
		}
		inv.images[k] = img
	}
	return nil
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

// applyInventory makes the Registry's ImageAttestations match inv: create new digests, update tags
// that moved, delete digests that are gone. Repositories in inv.failed are left untouched. An
// unchanged inventory makes no write.
func (r *RegistryReconciler) applyInventory(ctx context.Context, obj *v1alpha1.Registry, existing []v1alpha1.ImageAttestation, inv *inventory,
	policies []v1alpha1.RepositoryPolicy) (inventoryChanges, error) {
	var ch inventoryChanges
	var errs []error
	moves := movedTags(obj, existing, inv, policies, time.Now())
	known := map[imageKey]bool{}
	for i := range existing {
		known[imageKey{existing[i].Spec.Repository, existing[i].Spec.Digest}] = true
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
		ia := &existing[i]
		return len(newMoves(ia.Spec.MovedTags, moves[imageKey{ia.Spec.Repository, ia.Spec.Digest}])) > 0
	}
	sort.SliceStable(order, func(a, b int) bool { return receives(order[a]) && !receives(order[b]) })
	for _, i := range order {
		ia := &existing[i]
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
			len(fresh) == 0 {
			continue
		}
		base := ia.DeepCopy()
		ia.Spec.Tags, ia.Spec.MediaType, ia.Spec.Platforms = img.tags, img.mediaType, img.platforms
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
		},
	}
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// supplyChainTag matches the tags that carry signatures, attestations and SBOMs rather than images:
// cosign's tag scheme (`sha256-<hex>.sig`, `.att`, `.sbom`) and the OCI 1.1 referrers fallback tag
// (`sha256-<hex>`, distribution-spec "Referrers Tag Schema"). They are never images to evaluate.
var supplyChainTag = regexp.MustCompile(`^(sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})(\.(sig|att|sbom))?$`)

// imageAttestationName is deterministic, DNS-safe and at most 63 characters: the repository's last
// path segment (sanitised, up to 40 characters), a dash, and 16 hex digits of
// sha256(registry name, repository, digest), e.g. `api-3f1c9a0b2d4e5f60`.
func imageAttestationName(registryName, repository, digest string) string {
	base := repository[strings.LastIndex(repository, "/")+1:]
	base = strings.Trim(notDNS.ReplaceAllString(strings.ToLower(base), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	if base == "" {
		base = "image"
	}
	return base + "-" + shortHash(registryName+"\x00"+repository+"\x00"+digest, 16)
}

func shortHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

// labelValue is name when it fits a label value (63 characters), else a hash of it.
func labelValue(name string) string {
	if len(name) <= 63 {
		return name
	}
	return "h-" + shortHash(name, 32)
}
