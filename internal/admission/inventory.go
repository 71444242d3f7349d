package admission

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Field indexes the webhook's lookups use (registered by IndexFields before the cache starts).
const (
	// indexHost: Registry -> the host of its spec.url (HostOf).
	indexHost = ".admission.host"
	// indexTag: ImageAttestation -> `<registry>/<repository>:<tag>` for each of its tags.
	indexTag = ".admission.tag"
)

// IndexFields registers the indexes Inventory reads: Registries by host, ImageAttestations by tag.
// Call it once per manager, before the cache starts. The tag index costs about one map entry per
// tag of every ImageAttestation (docs/admission.md).
func IndexFields(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &v1alpha1.Registry{}, indexHost, func(o client.Object) []string {
		if h := HostOf(o.(*v1alpha1.Registry).Spec.URL); h != "" {
			return []string{h}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing Registries by host: %w", err)
	}
	if err := idx.IndexField(ctx, &v1alpha1.ImageAttestation{}, indexTag, func(o client.Object) []string {
		ia := o.(*v1alpha1.ImageAttestation)
		keys := make([]string, 0, len(ia.Spec.Tags))
		for _, t := range ia.Spec.Tags {
			keys = append(keys, tagKey(ia.Spec.RegistryRef.Name, ia.Spec.Repository, t))
		}
		return keys
	}); err != nil {
		return fmt.Errorf("indexing ImageAttestations by tag: %w", err)
	}
	return nil
}

func tagKey(registryName, repository, tag string) string {
	return registryName + "/" + repository + ":" + tag
}

// Resolver resolves repository:tag on reg to a digest with one registry request (a manifest HEAD),
// through the Registry's own client: its limiter, credentials and CA.
type Resolver func(ctx context.Context, reg *v1alpha1.Registry, repository, tag string) (digest string, err error)

// DefaultResolveTimeout bounds the one registry request for a tag the inventory does not know.
const DefaultResolveTimeout = 2 * time.Second

// Inventory answers what Portcullis knows about an image from the manager's cache: the Registries
// serving its host, their policies, the digest a tag points at and the digest's ImageAttestation.
// Known images cost no registry and no API-server request; an unknown tag costs one registry request
// (Resolve) under ResolveTimeout.
type Inventory struct {
	// Reader is the manager's cache (with IndexFields registered).
	Reader client.Reader
	// Resolve resolves a tag missing from the inventory; nil makes such a tag ReasonTagNotResolved.
	Resolve Resolver
	// ResolveTimeout bounds Resolve (default DefaultResolveTimeout).
	ResolveTimeout time.Duration
}

// Coverage returns one Coverage per Registry whose host is ref's. An error means the cache could not
// be read; the caller refuses (fail closed).
func (inv *Inventory) Coverage(ctx context.Context, ref Reference) ([]Coverage, error) {
	regs := &v1alpha1.RegistryList{}
	if err := inv.Reader.List(ctx, regs, client.MatchingFields{indexHost: ref.Host}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("reading Registries: %w", err)
	}
	out := make([]Coverage, 0, len(regs.Items))
	for i := range regs.Items {
		reg := &regs.Items[i]
		c := Coverage{Registry: types.NamespacedName{Namespace: reg.Namespace, Name: reg.Name}, Source: reg}
		pols := &v1alpha1.RepositoryPolicyList{}
		if err := inv.Reader.List(ctx, pols, client.InNamespace(reg.Namespace), client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("reading RepositoryPolicies: %w", err)
		}
		for _, p := range pols.Items {
			if p.Spec.RegistryRef.Name == reg.Name && policy.MatchAny(p.Spec.Repositories, ref.Repository) {
				c.Policies = append(c.Policies, p)
			}
		}
		if len(c.Policies) > 0 { // no policy governs the repository: nothing to look up
			if err := inv.lookup(ctx, reg, ref, &c); err != nil {
				return nil, err
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// lookup fills c's digest and ImageAttestation.
func (inv *Inventory) lookup(ctx context.Context, reg *v1alpha1.Registry, ref Reference, c *Coverage) error {
	c.Digest = ref.Digest
	if c.Digest == "" {
		ias := &v1alpha1.ImageAttestationList{}
		if err := inv.Reader.List(ctx, ias, client.InNamespace(reg.Namespace),
			client.MatchingFields{indexTag: tagKey(reg.Name, ref.Repository, ref.Tag)}, client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("reading ImageAttestations: %w", err)
		}
		if len(ias.Items) == 1 { // two while a tag moves between listings: ask the registry
			c.Digest, c.Attestation = ias.Items[0].Spec.Digest, &ias.Items[0]
			return nil
		}
		c.Digest, c.ResolveError = inv.resolve(ctx, reg, ref)
		if c.Digest == "" {
			return nil
		}
	}
	ia := &v1alpha1.ImageAttestation{}
	err := inv.Reader.Get(ctx, types.NamespacedName{Namespace: reg.Namespace,
		Name: v1alpha1.ImageAttestationName(reg.Name, ref.Repository, c.Digest)}, ia)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading an ImageAttestation: %w", err)
	case ia.Spec.Repository == ref.Repository && ia.Spec.Digest == c.Digest: // a hash collision is no match
		c.Attestation = ia
	}
	return nil
}

// resolve asks the registry for ref's tag, returning the digest or why there is none.
func (inv *Inventory) resolve(ctx context.Context, reg *v1alpha1.Registry, ref Reference) (string, string) {
	if inv.Resolve == nil {
		return "", ""
	}
	timeout := inv.ResolveTimeout
	if timeout <= 0 {
		timeout = DefaultResolveTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d, err := inv.Resolve(ctx, reg, ref.Repository, ref.Tag)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "", fmt.Sprintf("no answer within %s", timeout)
	case err != nil:
		return "", err.Error()
	}
	return d, ""
}
