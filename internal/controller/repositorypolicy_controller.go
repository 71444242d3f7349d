package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/verify"
)

// RepositoryPolicyReconciler reconciles a RepositoryPolicy: it checks that what the policy references
// exists and is usable (the Registry, public keys, trusted roots, regular expressions), and counts the
// images it selects by verdict.
type RepositoryPolicyReconciler struct {
	client.Client
	// APIReader reads Secrets and ConfigMaps uncached.
	APIReader client.Reader

	// validated maps a policy UID to the validationKey of its last successful validation.
	validated sync.Map
	// images walks the cache's ImageAttestations for the summary (zero: Client.List).
	images imageWalker
}

// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=repositorypolicies,verbs=list;watch
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=imageattestations,verbs=list;watch
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=repositorypolicies/status,verbs=patch
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
	reg := &v1alpha1.Registry{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: obj.Spec.RegistryRef.Name}, reg); err == nil && harborOwned(obj, reg) {
		if _, o, ok, err := harborClaim(ctx, r.Client, obj, reg); !ok || err != nil {
			return o, err
		}
	}
	if obj.Spec.Verification != nil || obj.Spec.VerdictAttestation != nil {
		// A verdict change re-counts the policy: the verification and the verdict signing key, read
		// uncached, are checked again only when the policy or that material changed.
		key, keyed := r.validationKey(ctx, obj)
		if prev, ok := r.validated.Load(obj.UID); !keyed || !ok || prev != key {
			if o, ok, err := r.validateMaterial(ctx, obj); !ok || err != nil {
				return o, err
			}
			if keyed {
				r.validated.Store(obj.UID, key)
			}
		}
	}
	if err := r.summarize(ctx, obj); err != nil {
		return failed(v1alpha1.ReadFailedReason, err), err
	}
	st := obj.Status
	if e := st.Enforcement; e != nil && e.Failed && e.ObservedGeneration == obj.Generation {
		// The Harbor controller retries with backoff; this one only reports it.
		return outcome{kind: outcomeFailed, reason: v1alpha1.EnforcementFailedReason, message: "writing to Harbor: " + e.Message}, nil
	}
	return ready(v1alpha1.SucceededReason, "%d images in %d repositories: %d compliant, %d non-compliant, %d pending",
		st.CompliantImages+st.NonCompliantImages+st.PendingImages, st.MatchedRepositories, st.CompliantImages, st.NonCompliantImages, st.PendingImages), nil
}

// validateMaterial reads and checks what the policy's verification and verdict signing read.
func (r *RepositoryPolicyReconciler) validateMaterial(ctx context.Context, obj *v1alpha1.RepositoryPolicy) (outcome, bool, error) {
	if obj.Spec.Verification != nil {
		material, o, ok, err := readMaterial(ctx, r.APIReader, obj.Namespace, obj.Spec.Verification)
		if !ok || err != nil {
			return o, false, err
		}
		v, err := verify.Compile(obj.Spec.Verification, material)
		if err != nil {
			return stalled(v1alpha1.InvalidSpecReason, "spec.verification: %v", err), false, nil
		}
		if sc := obj.Spec.Scanning; sc != nil && sc.VEX != nil {
			if err := v.WithVEX(sc.VEX.Authorities); err != nil {
				return stalled(v1alpha1.InvalidSpecReason, "spec.scanning.vex: %v", err), false, nil
			}
		}
	}
	if va := obj.Spec.VerdictAttestation; va != nil {
		if _, o, ok, err := readVerdictSigner(ctx, r.APIReader, obj.Namespace, va); !ok || err != nil {
			return o, false, err
		}
	}
	return outcome{}, true, nil
}

// validationKey names what validating a policy's verification depends on: its generation and the
// resourceVersion of every Secret and ConfigMap its authorities read, from the manager's metadata
// cache (no API request). keyed is false when one of them is not in the cache (validation says why).
func (r *RepositoryPolicyReconciler) validationKey(ctx context.Context, p *v1alpha1.RepositoryPolicy) (key string, keyed bool) {
	key = fmt.Sprintf("%d", p.Generation)
	for _, kind := range []string{"Secret", "ConfigMap"} {
		for _, name := range policyRefs(p, kind) {
			m := &metav1.PartialObjectMetadata{}
			m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind))
			if err := r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: name}, m); err != nil {
				return "", false
			}
			key += "/" + kind + "/" + name + "@" + m.ResourceVersion
		}
	}
	return key, true
}

// maxListedNonCompliant bounds status.nonCompliant (the API's MaxItems).
const maxListedNonCompliant = 10

// summarize counts the Registry's images the policy selects by their verdict for the policy's
// current generation (no verdict for it yet: pending) and lists the first non-compliant ones.
func (r *RepositoryPolicyReconciler) summarize(ctx context.Context, p *v1alpha1.RepositoryPolicy) error {
	st := &p.Status
	st.CompliantImages, st.NonCompliantImages, st.PendingImages, st.NonCompliant = 0, 0, 0, nil
	repos := map[string]bool{}
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{*p})
	type nonCompliant struct {
		ia      *v1alpha1.ImageAttestation
		reasons []string
	}
	var failing []nonCompliant // the first maxListedNonCompliant by name, kept sorted while walking
	byName := func(a, b nonCompliant) int { return strings.Compare(a.ia.Name, b.ia.Name) }
	images := r.images
	if images.reader == nil {
		images.reader = r.Client
	}
	// Read only: the cache's own objects, neither copied nor listed into an array (this runs on
	// every verdict change).
	err := images.each(ctx, p.Namespace, p.Spec.RegistryRef.Name, func(ia *v1alpha1.ImageAttestation) {
		if !selects(sel, ia) {
			return
		}
		repos[ia.Spec.Repository] = true
		res, ok := verdictCurrent(ia, p)
		switch {
		case !ok:
			st.PendingImages++
		case res.Compliant:
			st.CompliantImages++
		default:
			st.NonCompliantImages++
			failing = keepFirst(failing, nonCompliant{ia, res.Reasons}, maxListedNonCompliant, byName)
		}
	})
	if err != nil {
		return fmt.Errorf("listing ImageAttestations: %w", err)
	}
	for _, f := range failing {
		v := v1alpha1.ImageVerdict{ImageAttestation: f.ia.Name, Repository: f.ia.Spec.Repository, Digest: f.ia.Spec.Digest, Reasons: slices.Clone(f.reasons)}
		if len(f.ia.Spec.Tags) > 0 {
			v.Tag = f.ia.Spec.Tags[0]
		}
		st.NonCompliant = append(st.NonCompliant, v)
	}
	st.MatchedRepositories = int32(len(repos))
	return nil
}

// keepFirst inserts v into s, which is sorted by cmp and at most k long, and keeps the k smallest:
// a bounded selection, so a summary over 100,000 non-compliant images holds k of them, not all.
func keepFirst[T any](s []T, v T, k int, cmp func(a, b T) int) []T {
	i, _ := slices.BinarySearchFunc(s, v, cmp)
	if i >= k {
		return s
	}
	if len(s) == k {
		s = s[:k-1]
	}
	return slices.Insert(s, i, v)
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
	newList := func() client.ObjectList { return &v1alpha1.RepositoryPolicyList{} }
	// A verdict that changes re-counts the policies of the image's Registry.
	byImage := func(ctx context.Context, o client.Object) []ctrl.Request {
		ia := o.(*v1alpha1.ImageAttestation)
		reg := &v1alpha1.Registry{}
		reg.Name, reg.Namespace = ia.Spec.RegistryRef.Name, ia.Namespace
		return enqueueReferrers(r.Client, newList, indexRegistryRef)(ctx, reg)
	}
	// Another policy changing may start or end a Harbor project conflict (harborClaimants).
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.RepositoryPolicy{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, enforcementOutcomeChanged()))).
		Watches(&v1alpha1.RepositoryPolicy{}, handler.EnqueueRequestsFromMapFunc(harborClaimants(r.Client, false)), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.Registry{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexRegistryRef)),
			builder.WithPredicates(createOrDelete())).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexSecretRefs))).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexConfigMapRefs))).
		Watches(&v1alpha1.ImageAttestation{}, coalesced(byImage, summaryDelay), builder.WithPredicates(verdictChanged())).
		Named("repositorypolicy").
		Complete(r)
}

// summaryDelay is how long a verdict change waits before its policies are counted again: during a
// first pass thousands of verdicts a minute change, and counting a policy lists all of its Registry's
// ImageAttestations, so the counts in status are at most this much behind and cost one count (and at
// most one status write) per policy per delay, not one per verdict.
const summaryDelay = 2 * time.Second

// coalesced is mapFn's event handler that enqueues its requests after delay. The workqueue keeps
// one pending add per request, so a burst of events within delay costs one reconcile.
func coalesced(mapFn handler.MapFunc, delay time.Duration) handler.EventHandler {
	add := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range mapFn(ctx, o) {
			q.AddAfter(req, delay)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q)
		},
	}
}

// enforcementOutcomeChanged passes policy updates whose Harbor write-back started or stopped
// failing (status.enforcement, written by the Harbor controller), which the conditions reflect.
func enforcementOutcomeChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		DeleteFunc: func(event.DeleteEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*v1alpha1.RepositoryPolicy).Status.Enforcement, e.ObjectNew.(*v1alpha1.RepositoryPolicy).Status.Enforcement
			failedMsg := func(s *v1alpha1.EnforcementStatus) string {
				if s == nil || !s.Failed {
					return ""
				}
				return s.Message
			}
			return failedMsg(o) != failedMsg(n)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// verdictChanged passes creations, deletions and updates that change an image's policy verdicts or
// tags (which decide what a policy selects); the rest of an ImageAttestation's status does not
// change a policy's counts.
func verdictChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*v1alpha1.ImageAttestation), e.ObjectNew.(*v1alpha1.ImageAttestation)
			return !equality.Semantic.DeepEqual(o.Status.Policies, n.Status.Policies) || !slices.Equal(o.Spec.Tags, n.Spec.Tags)
		},
		GenericFunc: func(_ event.GenericEvent) bool { return false },
	}
}

// createOrDelete passes only creations and deletions: a referenced object's existence is all a
// referrer checks, so its status updates must not echo into the referrers.
func createOrDelete() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc:  func(_ event.UpdateEvent) bool { return false },
		GenericFunc: func(_ event.GenericEvent) bool { return false },
	}
}
