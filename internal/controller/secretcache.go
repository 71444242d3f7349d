package controller

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ErrSecretCache is returned by a cache wrapped with NoSecretCache for any read that would start a
// typed (full-object) Secret informer.
var ErrSecretCache = errors.New("a cached read of Secrets would hold every Secret of the watched namespaces in memory: " +
	"read Secrets with the manager's API reader, or their metadata only (metav1.PartialObjectMetadata)")

// NoSecretCache wraps newCache (cache.New when nil) so that the manager can never start an
// informer on whole Secrets: Get, List and GetInformer of *corev1.Secret, *corev1.SecretList or an
// unstructured Secret fail with ErrSecretCache, while metadata-only reads and watches
// (metav1.PartialObjectMetadata, WatchesMetadata) work. Secrets are read uncached by name through
// the API reader; the guard turns any code path that forgets it into an error that tests catch,
// instead of a cluster-wide copy of every credential in the manager's memory.
func NoSecretCache(newCache cache.NewCacheFunc) cache.NewCacheFunc {
	if newCache == nil {
		newCache = cache.New
	}
	return func(cfg *rest.Config, opts cache.Options) (cache.Cache, error) {
		c, err := newCache(cfg, opts)
		if err != nil {
			return nil, err
		}
		return noSecrets{Cache: c}, nil
	}
}

type noSecrets struct{ cache.Cache }

var secretKind = corev1.SchemeGroupVersion.WithKind("Secret")

// typedSecret reports whether obj is a whole Secret or Secret list (not metadata only).
func typedSecret(obj runtime.Object) bool {
	switch o := obj.(type) {
	case *corev1.Secret, *corev1.SecretList:
		return true
	case *unstructured.Unstructured:
		return o.GroupVersionKind().GroupKind() == secretKind.GroupKind()
	case *unstructured.UnstructuredList:
		gk := o.GroupVersionKind().GroupKind()
		return gk.Group == "" && (gk.Kind == "Secret" || gk.Kind == "SecretList")
	}
	return false
}

func (c noSecrets) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if typedSecret(obj) {
		return fmt.Errorf("get Secret %s: %w", key, ErrSecretCache)
	}
	return c.Cache.Get(ctx, key, obj, opts...)
}

func (c noSecrets) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if typedSecret(list) {
		return fmt.Errorf("list Secrets: %w", ErrSecretCache)
	}
	return c.Cache.List(ctx, list, opts...)
}

func (c noSecrets) GetInformer(ctx context.Context, obj client.Object, opts ...cache.InformerGetOption) (cache.Informer, error) {
	if typedSecret(obj) {
		return nil, fmt.Errorf("informer on Secrets: %w", ErrSecretCache)
	}
	return c.Cache.GetInformer(ctx, obj, opts...)
}

// GetInformerForKind starts a typed informer for a GVK: never for Secrets.
func (c noSecrets) GetInformerForKind(ctx context.Context, gvk schema.GroupVersionKind, opts ...cache.InformerGetOption) (cache.Informer, error) {
	if gvk == secretKind {
		return nil, fmt.Errorf("informer on Secrets: %w", ErrSecretCache)
	}
	return c.Cache.GetInformerForKind(ctx, gvk, opts...)
}

// secretVersion is the resourceVersion of Secret key from the manager's metadata cache (no API
// request, no data): what says whether a value read from it earlier is still current.
func secretVersion(ctx context.Context, c client.Reader, key types.NamespacedName) (string, error) {
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := c.Get(ctx, key, meta); err != nil {
		return "", err
	}
	return meta.ResourceVersion, nil
}
