package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// errNotGoverned: the image is not one the Registry watches and a policy selects (final).
var errNotGoverned = errors.New("not governed")

// onDemand puts one image into the inventory ahead of the next listing (Wiring.Evaluate): the
// ImageAttestation controller then verifies and scans it at once, as it does a digest a listing
// found. The next listing reconciles the object like any other (tags, accessories, moves).
type onDemand struct {
	client client.Client
	scheme *runtime.Scheme
	access *registryAccess
	// relist lists one repository now (RegistryReconciler.relistRepository): for a tag that moved.
	relist func(ctx context.Context, reg *v1alpha1.Registry, repository string) error
}

// evaluate is put, then the listing of the repository when the tag moved off another digest of the
// inventory (the move recorded for immutability, the tag taken off the old digest, as the next pass
// would): Wiring.Evaluate, for admission.
func (o *onDemand) evaluate(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) (string, error) {
	d, moved, err := o.put(ctx, reg, repository, tag, digest)
	if err != nil || !moved || o.relist == nil {
		return d, err
	}
	return d, o.relist(ctx, reg, repository)
}

// put makes sure reg's inventory holds repository@digest. The registry is asked once, never
// trusting the caller's mapping: a tag is resolved (one manifest HEAD) and must point at digest when
// digest is given; a digest alone is read (one manifest GET, which the scan reuses). The image must
// be one the Registry watches and one of its policies selects (by its tag; any tag for a bare
// digest). An ImageAttestation that exists already is left as it is. It returns the digest, and
// whether the tag is on another digest of the inventory (it moved; nothing is created then, the
// repository's listing is the caller's to run).
func (o *onDemand) put(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) (string, bool, error) {
	if reg.Spec.Suspend {
		return "", false, fmt.Errorf("%w: the Registry %s/%s is suspended", errNotGoverned, reg.Namespace, reg.Name)
	}
	if len(reg.Spec.Repositories.Names) > 0 && !slices.Contains(reg.Spec.Repositories.Names, repository) ||
		len(reg.Spec.Repositories.Names) == 0 && !policy.Selects(reg.Spec.Repositories.PatternSelector, repository) {
		return "", false, fmt.Errorf("%w: the Registry %s/%s does not watch the repository %s", errNotGoverned, reg.Namespace, reg.Name, repository)
	}
	if supplyChainTag.MatchString(tag) {
		return "", false, fmt.Errorf("%w: %s:%s is a signature, attestation or SBOM tag, not an image", errNotGoverned, repository, tag)
	}
	policies := &v1alpha1.RepositoryPolicyList{}
	if err := o.client.List(ctx, policies, client.InNamespace(reg.Namespace), client.MatchingFields{indexRegistryRef: reg.Name}); err != nil {
		return "", false, err
	}
	sel := policy.NewSelection(policies.Items)
	if !sel.Repository(repository) || (tag != "" && !sel.Tag(repository, tag)) {
		return "", false, fmt.Errorf("%w: no RepositoryPolicy of the Registry %s/%s selects %s:%s", errNotGoverned, reg.Namespace, reg.Name, repository, tag)
	}
	c, out, ok, err := o.access.client(ctx, reg)
	switch {
	case err != nil:
		return "", false, err
	case !ok:
		return "", false, fmt.Errorf("the Registry %s/%s cannot be reached as configured: %s", reg.Namespace, reg.Name, out.message)
	}
	img := &image{}
	if tag != "" {
		m, err := c.Resolve(ctx, repository, tag)
		if err != nil {
			c.Forget(err)
			return "", false, err
		}
		if digest != "" && m.Digest != digest {
			return "", false, fmt.Errorf("%s:%s points at %s, not %s", repository, tag, m.Digest, digest)
		}
		digest, img.mediaType, img.tags = m.Digest, m.MediaType, []string{tag}
	} else {
		_, mediaType, err := c.Manifest(ctx, repository, digest)
		if err != nil {
			c.Forget(err)
			return "", false, err
		}
		img.mediaType = mediaType
	}
	if tag != "" {
		// The tag on another digest of the inventory: it moved.
		moved, err := o.taggedElsewhere(ctx, reg, repository, tag, digest)
		if err != nil {
			return "", false, err
		}
		if moved {
			return digest, true, nil
		}
	}
	k := imageKey{repository, digest}
	existing := &v1alpha1.ImageAttestation{}
	switch err := o.client.Get(ctx, client.ObjectKey{Namespace: reg.Namespace, Name: imageAttestationName(reg.Name, repository, digest)}, existing); {
	case err == nil:
		return digest, false, nil
	case !apierrors.IsNotFound(err):
		return "", false, err
	}
	if (registry.Manifest{MediaType: img.mediaType}).IsIndex() {
		if img.platforms, err = platformsOf(ctx, c, repository, digest); err != nil {
			return "", false, err
		}
	}
	ia := newImageAttestation(reg, k, img)
	ia.Spec.Accessories = nil // not listed yet: every supply-chain source is looked at
	if err := controllerutil.SetControllerReference(reg, ia, o.scheme); err != nil {
		return "", false, err
	}
	if err := o.client.Create(ctx, ia); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", false, fmt.Errorf("creating ImageAttestation for %s@%s: %w", repository, digest, err)
	}
	return digest, false, nil
}

// repositoryImages are reg's ImageAttestations of repository (the cache, by label).
func (o *onDemand) repositoryImages(ctx context.Context, reg *v1alpha1.Registry, repository string) ([]v1alpha1.ImageAttestation, error) {
	list := &v1alpha1.ImageAttestationList{}
	if err := o.client.List(ctx, list, client.InNamespace(reg.Namespace), client.MatchingLabels{
		v1alpha1.RegistryLabel: labelValue(reg.Name), v1alpha1.RepositoryHashLabel: shortHash(repository, 16)}); err != nil {
		return nil, err
	}
	out := list.Items[:0]
	for _, ia := range list.Items {
		if ia.Spec.RegistryRef.Name == reg.Name && ia.Spec.Repository == repository {
			out = append(out, ia)
		}
	}
	return out, nil
}

// taggedElsewhere reports whether an ImageAttestation of another digest carries tag.
func (o *onDemand) taggedElsewhere(ctx context.Context, reg *v1alpha1.Registry, repository, tag, digest string) (bool, error) {
	ias, err := o.repositoryImages(ctx, reg, repository)
	if err != nil {
		return false, err
	}
	for _, ia := range ias {
		if ia.Spec.Digest != digest && slices.Contains(ia.Spec.Tags, tag) {
			return true, nil
		}
	}
	return false, nil
}
