package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/verify"
)

// RepositoryPolicyReconciler reconciles a RepositoryPolicy: it checks that what the policy references
// exists and is usable (the Registry, public keys, trusted roots, regular expressions).
type RepositoryPolicyReconciler struct {
	client.Client
	// APIReader reads Secrets and ConfigMaps uncached.
	APIReader client.Reader
}

// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=repositorypolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=repositorypolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch

// Reconcile runs one pass for a RepositoryPolicy and writes its status with at most one patch.
func (r *RepositoryPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return ctrl.Result{}, reconcileOnce(ctx, r.Client, req.NamespacedName, &v1alpha1.RepositoryPolicy{}, r.reconcile)
}

func (r *RepositoryPolicyReconciler) reconcile(ctx context.Context, obj *v1alpha1.RepositoryPolicy) (outcome, error) {
	if o, ok, err := checkRegistryRef(ctx, r.Client, obj.Namespace, obj.Spec.RegistryRef.Name); !ok || err != nil {
		return o, err
	}
	if p := policy.InvalidPattern(policyPatterns(&obj.Spec)...); p != "" {
		return stalled(v1alpha1.InvalidSpecReason, "invalid pattern %q (doublestar syntax: https://github.com/bmatcuk/doublestar#patterns)", p), nil
	}
	if obj.Spec.Verification != nil {
		material, o, ok, err := readMaterial(ctx, r.APIReader, obj.Namespace, obj.Spec.Verification)
		if !ok || err != nil {
			return o, err
		}
		if _, err := verify.Compile(obj.Spec.Verification, material); err != nil {
			return stalled(v1alpha1.InvalidSpecReason, "spec.verification: %v", err), nil
		}
	}
	return ready(v1alpha1.SucceededReason, "RepositoryPolicy is valid"), nil
}

// policyPatterns lists every doublestar pattern list of a policy spec.
func policyPatterns(spec *v1alpha1.RepositoryPolicySpec) [][]string {
	out := [][]string{spec.Repositories, spec.Tags.Include, spec.Tags.Exclude}
	if spec.Immutability != nil {
		out = append(out, spec.Immutability.Tags)
	}
	if spec.Retention != nil {
		for _, r := range spec.Retention.Rules {
			out = append(out, r.Tags.Include, r.Tags.Exclude)
		}
	}
	return out
}

// checkRegistryRef stalls when the named Registry does not exist (a watch re-queues when it appears).
func checkRegistryRef(ctx context.Context, c client.Reader, ns, name string) (outcome, bool, error) {
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &v1alpha1.Registry{})
	switch {
	case apierrors.IsNotFound(err):
		return stalled(v1alpha1.RegistryNotFoundReason, "Registry %q not found in namespace %q", name, ns), false, nil
	case err != nil:
		return failed(v1alpha1.ReadFailedReason, fmt.Errorf("reading Registry %q: %w", name, err)), false, err
	}
	return outcome{}, true, nil
}

// SetupWithManager registers the controller: policies on spec change, the Registries they name, and
// the Secrets and ConfigMaps their authorities read (metadata only).
func (r *RepositoryPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		return fmt.Errorf("RepositoryPolicyReconciler needs an APIReader")
	}
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.RepositoryPolicy{}, indexSecretRefs, policySecretNames); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1alpha1.RepositoryPolicy{}, indexConfigMapRefs, policyConfigMapNames); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1alpha1.RepositoryPolicy{}, indexRegistryRef, func(o client.Object) []string {
		return []string{o.(*v1alpha1.RepositoryPolicy).Spec.RegistryRef.Name}
	}); err != nil {
		return err
	}
	newList := func() client.ObjectList { return &v1alpha1.RepositoryPolicyList{} }
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.RepositoryPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.Registry{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexRegistryRef)),
			builder.WithPredicates(createOrDelete())).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexSecretRefs))).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexConfigMapRefs))).
		Named("repositorypolicy").
		Complete(r)
}

// createOrDelete passes only creations and deletions: a referenced object's existence is all a
// referrer checks, so its status updates must not echo into the referrers.
func createOrDelete() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc:  func(_ event.UpdateEvent) bool { return false },
		GenericFunc: func(_ event.GenericEvent) bool { return false },
	}
}
