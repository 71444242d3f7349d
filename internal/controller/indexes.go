package controller

import (
	"context"
	"fmt"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/receiver"
)

// Field index names. Each maps an object to the names of objects it references in its namespace, so a
// change to the referenced object re-queues exactly the objects that use it.
const (
	// indexSecretRefs: Registry -> Secrets (secretRef, certSecretRef); RepositoryPolicy -> Secrets
	// (key authorities, trusted roots kept in Secrets).
	indexSecretRefs = ".portcullis.secretRefs"
	// indexConfigMapRefs: RepositoryPolicy -> ConfigMaps (trusted roots).
	indexConfigMapRefs = ".portcullis.configMapRefs"
	// indexReceiverPath: Registry -> its push receiver path (receiver.Path), with spec.notifications.
	indexReceiverPath = "receiverPath"
	// indexRegistryRef: RepositoryPolicy and ImageAttestation -> Registry.
	indexRegistryRef = ".spec.registryRef.name"
)

func registrySecretNames(o client.Object) []string {
	r := o.(*v1alpha1.Registry)
	var names []string
	if r.Spec.SecretRef != nil {
		names = append(names, r.Spec.SecretRef.Name)
	}
	if r.Spec.CertSecretRef != nil {
		names = append(names, r.Spec.CertSecretRef.Name)
	}
	return names
}

func policySecretNames(o client.Object) []string {
	return policyRefs(o.(*v1alpha1.RepositoryPolicy), "Secret")
}

func policyConfigMapNames(o client.Object) []string {
	return policyRefs(o.(*v1alpha1.RepositoryPolicy), "ConfigMap")
}

// policyRefs lists the Secrets or ConfigMaps a policy's authorities read.
func policyRefs(p *v1alpha1.RepositoryPolicy, kind string) []string {
	var names []string
	if va := p.Spec.VerdictAttestation; va != nil && kind == "Secret" {
		names = append(names, va.KeySecretRef.Name)
	}
	if p.Spec.Verification == nil {
		return names
	}
	for _, a := range p.Spec.Verification.Authorities {
		if a.Key != nil && a.Key.SecretRef != nil && kind == "Secret" {
			names = append(names, a.Key.SecretRef.Name)
		}
		if a.Keyless != nil && trustedRootKind(a.Keyless.TrustedRootRef) == kind {
			names = append(names, a.Keyless.TrustedRootRef.Name)
		}
		if a.Key != nil && a.Key.TrustedRootRef != nil && trustedRootKind(*a.Key.TrustedRootRef) == kind {
			names = append(names, a.Key.TrustedRootRef.Name)
		}
		if a.Notation != nil && certificatesKind(a.Notation.TrustStoreRef) == kind {
			names = append(names, a.Notation.TrustStoreRef.Name)
		}
	}
	return names
}

// trustedRootKind is the reference's kind with the API default applied.
func trustedRootKind(r v1alpha1.TrustedRootReference) string {
	if r.Kind == "" {
		return "ConfigMap"
	}
	return r.Kind
}

// enqueueReferrers returns a map function that, for a changed object (a Secret, a ConfigMap, a
// Registry), requests reconciliation of the objects of newList's kind in its namespace whose index
// field names it. A List error requests nothing: the periodic resync covers a missed event.
func enqueueReferrers(c client.Client, newList func() client.ObjectList, index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		list := newList()
		// Names only: no copy of (possibly) every ImageAttestation of a Registry at each of its changes.
		if err := c.List(ctx, list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()},
			client.UnsafeDisableDeepCopy); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing referrers", "index", index, "object", klog.KObj(o))
			return nil
		}
		items, err := apimeta.ExtractList(list)
		if err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(items))
		for _, it := range items {
			if obj, ok := it.(client.Object); ok {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
			}
		}
		return reqs
	}
}

// registerIndexes registers every field index the controllers use, once per manager (an informer
// refuses an index registered twice): SetupAll calls it before the controllers are set up.
func registerIndexes(ctx context.Context, idx client.FieldIndexer) error {
	for _, ix := range []struct {
		obj     client.Object
		field   string
		extract client.IndexerFunc
	}{
		{&v1alpha1.Registry{}, indexSecretRefs, registrySecretNames},
		{&v1alpha1.Registry{}, indexReceiverPath, func(o client.Object) []string {
			if o.(*v1alpha1.Registry).Spec.Notifications == nil {
				return nil
			}
			return []string{receiver.Path(o.GetUID())}
		}},
		{&v1alpha1.RepositoryPolicy{}, indexSecretRefs, policySecretNames},
		{&v1alpha1.RepositoryPolicy{}, indexConfigMapRefs, policyConfigMapNames},
		{&v1alpha1.RepositoryPolicy{}, indexRegistryRef, func(o client.Object) []string {
			return []string{o.(*v1alpha1.RepositoryPolicy).Spec.RegistryRef.Name}
		}},
		{&v1alpha1.ImageAttestation{}, indexRegistryRef, func(o client.Object) []string {
			return []string{o.(*v1alpha1.ImageAttestation).Spec.RegistryRef.Name}
		}},
	} {
		if err := idx.IndexField(ctx, ix.obj, ix.field, ix.extract); err != nil {
			return fmt.Errorf("indexing %T by %s: %w", ix.obj, ix.field, err)
		}
	}
	return nil
}
