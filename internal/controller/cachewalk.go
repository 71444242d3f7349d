package controller

import (
	"context"
	"fmt"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
)

// imageWalker visits the ImageAttestations of the manager's cache in place. A List, even with
// UnsafeDisableDeepCopy, copies every object into a new N-element array (about 1.5 KiB each): at
// 100,000 images that is 150 MiB of garbage per call, and the policy summary and the metrics
// scrape make such calls continuously. Walking the informer's indexer hands out the cache's own
// pointers instead (read only: never modify what fn receives).
type imageWalker struct {
	// informers is the manager's cache; nil, or an informer that is not an indexer, falls back to
	// reader.List.
	informers cache.Informers
	reader    client.Reader
}

// Index names and keys as controller-runtime's cache builds them for a field index registered
// with IndexField (pkg/cache/internal: FieldIndexName and KeyToNamespacedKey); TestImageWalker
// checks them against a List with MatchingFields.
func fieldIndexName(field string) string { return "field:" + field }

func namespacedIndexKey(namespace, value string) string { return namespace + "/" + value }

// each calls fn for every ImageAttestation of the Registry registry in namespace, or for every
// ImageAttestation when registry is "" (namespace is then ignored).
func (w imageWalker) each(ctx context.Context, namespace, registry string, fn func(*v1alpha1.ImageAttestation)) error {
	if w.informers != nil {
		inf, err := w.informers.GetInformer(ctx, &v1alpha1.ImageAttestation{})
		if err != nil {
			return err
		}
		if sii, ok := inf.(toolscache.SharedIndexInformer); ok {
			var objs []any
			if registry == "" {
				objs = sii.GetIndexer().List()
			} else if objs, err = sii.GetIndexer().ByIndex(fieldIndexName(indexRegistryRef), namespacedIndexKey(namespace, registry)); err != nil {
				return fmt.Errorf("reading the ImageAttestations of %s/%s: %w", namespace, registry, err)
			}
			for _, o := range objs {
				if ia, ok := o.(*v1alpha1.ImageAttestation); ok {
					fn(ia)
				}
			}
			return nil
		}
	}
	list := &v1alpha1.ImageAttestationList{}
	opts := []client.ListOption{client.UnsafeDisableDeepCopy}
	if registry != "" {
		opts = append(opts, client.InNamespace(namespace), client.MatchingFields{indexRegistryRef: registry})
	}
	if err := w.reader.List(ctx, list, opts...); err != nil {
		return err
	}
	for i := range list.Items {
		fn(&list.Items[i])
	}
	return nil
}

// collect returns the ImageAttestations of the Registry registry in namespace (every one when
// registry is ""): the cache's own objects, read only. The slice holds only pointers (8 bytes an
// image), where a List would copy every object for as long as the caller holds it.
func (w imageWalker) collect(ctx context.Context, namespace, registry string) ([]*v1alpha1.ImageAttestation, error) {
	var out []*v1alpha1.ImageAttestation
	err := w.each(ctx, namespace, registry, func(ia *v1alpha1.ImageAttestation) { out = append(out, ia) })
	return out, err
}
