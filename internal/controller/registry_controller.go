package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// ReconcileRequestAnnotation, set to any new value (e.g. a timestamp) on a Registry, asks for an
// immediate pass outside the interval: `kubectl annotate registry NAME
// registry.portcullis.dev/reconcile-request="$(date +%s)" --overwrite`.
const ReconcileRequestAnnotation = "registry.portcullis.dev/reconcile-request"

// Defaults of RegistrySpec, as the CRD sets them (for objects written before a default existed).
const (
	defaultInterval = 10 * time.Minute
	defaultTimeout  = 5 * time.Minute
	// defaultConcurrency is spec.requests.concurrency's default.
	defaultConcurrency = 8
)

// RegistryReconciler reconciles a Registry: it checks that the spec can work (host allowed, http only
// where allowed, credentials and CA usable), lists the registry every interval, and keeps exactly one
// ImageAttestation per (repository, digest) that some RepositoryPolicy selects.
type RegistryReconciler struct {
	client.Client
	// APIReader reads Secrets uncached, so the manager never caches every Secret in the cluster.
	APIReader client.Reader
	Options   Options
	// Recorder emits events when the registry becomes unreachable or recovers; nil emits none.
	Recorder events.EventRecorder
	// access builds and keeps the registry clients (shared with the ImageAttestation controller).
	access *registryAccess
	// images reads the inventory in place; its zero value lists through Client.
	images imageWalker
	// unreachable holds the Registries (client.ObjectKey) announced RegistryUnreachable and not yet
	// RegistryRecovered.
	unreachable sync.Map
	// shrinks remembers the listings that came back far smaller than the inventory (shrinkGuard).
	shrinks shrinkGuard
}

// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=registries,verbs=list;watch
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=registries/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch

// Reconcile runs one pass for a Registry and writes its status with at most one patch (two when the
// generation is new: Reconciling is shown before the registry is listed).
func (r *RegistryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	obj := &v1alpha1.Registry{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if client.IgnoreNotFound(err) == nil {
			r.unreachable.Delete(req.NamespacedName)
			if r.access != nil {
				r.access.forget(req.NamespacedName)
			}
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if obj.Status.ObservedGeneration != obj.Generation && !obj.Spec.Suspend &&
		!hasConditionStatus(obj, v1alpha1.ReconcilingCondition, metav1.ConditionTrue) {
		base := obj.DeepCopy()
		applyOutcome(obj, pending(v1alpha1.ProgressingReason, "listing the registry for generation %d", obj.Generation))
		if err := patchStatus(ctx, r.Client, obj, base); err != nil {
			return ctrl.Result{}, fmt.Errorf("patching status: %w", err)
		}
	}
	base := obj.DeepCopy()
	var announce func() // the reachability event, sent once the status that records it is written
	defer func() {
		if err := patchStatus(ctx, r.Client, obj, base); err != nil {
			if retErr == nil {
				retErr = fmt.Errorf("patching status: %w", err)
			}
			return
		}
		if announce != nil {
			announce()
		}
	}()

	o, changed, err := r.reconcile(ctx, obj)
	applyOutcome(obj, o)
	announce = r.reachabilityTransition(obj, base)
	if changed || !equalStatus(obj, base) {
		now := metav1.Now()
		obj.Status.LastSyncTime = &now
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if o.kind == outcomeReady {
		return ctrl.Result{RequeueAfter: registryInterval(obj)}, nil
	}
	return ctrl.Result{}, nil
}

// unreachableReasons are the Ready reasons that mean the registry cannot be used right now.
var unreachableReasons = map[string]bool{
	v1alpha1.AuthenticationFailedReason: true, v1alpha1.RateLimitedReason: true,
	v1alpha1.RegistryUnavailableReason: true, v1alpha1.InvalidResponseReason: true,
}

// reachabilityTransition returns the event for a transition only, nil otherwise: the registry becomes
// unreachable (Warning RegistryUnreachable) or is listed again after being unreachable (Normal
// RegistryRecovered), even when it passed through another failure on the way back.
func (r *RegistryReconciler) reachabilityTransition(obj, base *v1alpha1.Registry) func() {
	if r.Recorder == nil {
		return nil
	}
	unreachable := func(o *v1alpha1.Registry) bool {
		c := apimeta.FindStatusCondition(o.Status.Conditions, v1alpha1.ReadyCondition)
		return c != nil && c.Status == metav1.ConditionFalse && unreachableReasons[c.Reason]
	}
	key := client.ObjectKeyFromObject(obj)
	_, announced := r.unreachable.Load(key)
	was := announced || unreachable(base) // the status says so after a manager restart
	switch is := unreachable(obj); {
	case is && !was:
		c := apimeta.FindStatusCondition(obj.Status.Conditions, v1alpha1.ReadyCondition)
		reason, msg := c.Reason, truncate(c.Message, 800)
		return func() {
			r.unreachable.Store(key, true)
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "RegistryUnreachable", "List", "%s: %s", reason, msg)
		}
	case was && listed(obj): // not merely suspended (Ready=True, reason Suspended)
		return func() {
			r.unreachable.Delete(key)
			r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, "RegistryRecovered", "List", "the registry was listed again")
		}
	}
	return nil
}

// listed reports whether obj's last pass listed the registry (Ready=True, reason Succeeded).
func listed(obj *v1alpha1.Registry) bool {
	c := apimeta.FindStatusCondition(obj.Status.Conditions, v1alpha1.ReadyCondition)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.SucceededReason
}

// reconcile is the flat list of steps of one pass. changed reports whether ImageAttestations were
// created, updated or deleted. A returned error is transient (backoff).
func (r *RegistryReconciler) reconcile(ctx context.Context, obj *v1alpha1.Registry) (o outcome, changed bool, err error) {
	o, ch, err := r.pass(ctx, obj)
	return o, ch.any(), err
}

func (r *RegistryReconciler) pass(ctx context.Context, obj *v1alpha1.Registry) (outcome, inventoryChanges, error) {
	var none inventoryChanges
	if obj.Spec.Suspend {
		return outcome{kind: outcomeSuspended, reason: v1alpha1.SuspendedReason, message: "spec.suspend is true: the registry is not listed"}, none, nil
	}
	lister, o, ok, err := r.access.client(ctx, obj)
	if !ok || err != nil {
		return o, none, err
	}
	if p := policy.InvalidPattern(obj.Spec.Repositories.Include, obj.Spec.Repositories.Exclude); p != "" {
		return stalled(v1alpha1.InvalidSpecReason, "spec.repositories: invalid pattern %q", p), none, nil
	}
	policies := &v1alpha1.RepositoryPolicyList{}
	if err := r.List(ctx, policies, client.InNamespace(obj.Namespace), client.MatchingFields{indexRegistryRef: obj.Name}); err != nil {
		return failed(v1alpha1.ReadFailedReason, err), none, err
	}
	for i := range policies.Items {
		// A pattern that does not parse matches nothing: listing with it would delete the images the
		// policy meant to keep, or keep tags it meant to exclude. Change nothing until it is fixed.
		if p := policy.InvalidPattern(policyPatterns(&policies.Items[i].Spec)...); p != "" {
			return stalled(v1alpha1.PolicyInvalidReason, "RepositoryPolicy %q has the invalid pattern %q; the inventory is kept until it is fixed",
				policies.Items[i].Name, p), none, nil
		}
	}
	// The cache's own objects, not copies: a pass lasts as long as the listing, and a copy of every
	// ImageAttestation for that long would double the manager's memory. They are read only;
	// applyInventory copies the few it changes.
	existing, err := r.inventory().collect(ctx, obj.Namespace, obj.Name)
	if err != nil {
		return failed(v1alpha1.ReadFailedReason, err), none, err
	}
	passCtx, cancel := context.WithTimeout(ctx, registryTimeout(obj))
	defer cancel()
	var reg registryLister = lister
	if obj.Spec.Provider == v1alpha1.ProviderHarbor && obj.Spec.SecretRef != nil {
		hc, err := r.access.harbor(ctx, obj)
		switch {
		case errors.Is(err, errHarborConfig):
			return stalled(v1alpha1.InvalidSpecReason, "%v", err), none, nil
		case err != nil:
			return failed(v1alpha1.ReadFailedReason, err), none, err
		}
		reg = newHarborLister(lister, hc)
	}
	l := r.listing(obj, existing, policies.Items, reg)
	l.ctx = ctx
	// Listing is background work: verification and scans of the digests it finds go first.
	res, err := l.walk.run(registry.WithBackground(passCtx), l.after, l.apply, l.progress)
	changes, werr, failedRepos := l.result()
	if err == nil {
		registryPasses.WithLabelValues(obj.Namespace + "/" + obj.Name).SetToCurrentTime()
		// Repositories that left the catalog or the policies' scope lose their ImageAttestations, once
		// the catalog was read to its end. A resumed pass saw only the names after `after`.
		gone := l.vanished(res.governed)
		if err := catalogShrank(obj.Status.RepositoryCount, int32(res.repositories)+l.resumedRepositories(), len(gone)); err != nil {
			// Kept until a listing confirms the smaller catalog: the next pass compares with the
			// count this one records.
			failedRepos["(catalog)"] = err
		} else {
			ch, derr := r.applyInventory(ctx, obj, gone, &inventory{images: map[imageKey]*image{}, failed: map[string]error{}}, policies.Items)
			changes.add(ch)
			werr = errors.Join(werr, derr)
		}
	}
	obj.Status.ImageCount = int32(l.imageCount(changes))
	switch {
	case err != nil && l.resumable(passCtx):
		// Cut by the deadline: the next pass resumes after the last page that was done.
		obj.Status.Listing = l.next
		obj.Status.RepositoryCount = max(obj.Status.RepositoryCount, l.next.Repositories)
		msg := fmt.Sprintf("listing did not finish within spec.timeout (%s) after %d repositories; the next pass resumes after %q",
			registryTimeout(obj), l.next.Repositories, l.next.ContinueAfter)
		return outcome{kind: outcomeFailed, reason: v1alpha1.ProgressingReason, message: msg}, changes, fmt.Errorf("%s", msg)
	case err != nil:
		obj.Status.Listing = nil // start afresh: the registry may page differently next time
		o := registryFailure("listing the catalog failed; the last known inventory is kept", err)
		return o, changes, err
	}
	obj.Status.Listing = nil
	obj.Status.RepositoryCount = int32(res.repositories) + l.resumedRepositories()
	if werr != nil {
		return failed(v1alpha1.InventoryWriteFailedReason, werr), changes, werr
	}
	if len(failedRepos) > 0 {
		err := firstFailure(failedRepos)
		o := registryFailure(fmt.Sprintf("listing %d of the governed repositories failed; their last known images are kept", len(failedRepos)), err)
		return o, changes, err
	}
	if changes.any() {
		ctrl.LoggerFrom(ctx).Info("inventory changed", "created", changes.created, "updated", changes.updated, "deleted", changes.deleted)
	}
	return ready(v1alpha1.SucceededReason, "listed %d repositories; %d images selected by %d policies",
		obj.Status.RepositoryCount, obj.Status.ImageCount, len(policies.Items)), changes, nil
}

// registryFailure maps a registry error to a transient outcome whose reason names its kind.
func registryFailure(what string, err error) outcome {
	reason := v1alpha1.RegistryUnavailableReason
	switch {
	case errors.Is(err, registry.ErrNotAllowed):
		reason = v1alpha1.HostNotAllowedReason
	case errors.Is(err, errListingShrank):
		reason = v1alpha1.ListingShrankReason
	case errors.Is(err, registry.ErrUnauthorized):
		reason = v1alpha1.AuthenticationFailedReason
	case errors.Is(err, registry.ErrRateLimited):
		reason = v1alpha1.RateLimitedReason
	case errors.Is(err, registry.ErrInvalidResponse), errors.Is(err, registry.ErrTooLarge):
		reason = v1alpha1.InvalidResponseReason
	}
	return outcome{kind: outcomeFailed, reason: reason, message: what + ": " + truncate(err.Error(), 512)}
}

// firstFailure returns the error of the alphabetically first failed repository, so that the message
// is stable across passes.
func firstFailure(failed map[string]error) error {
	first := ""
	for repo := range failed {
		if first == "" || repo < first {
			first = repo
		}
	}
	return failed[first]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// equalStatus reports whether two Registries have the same status, LastSyncTime aside.
func equalStatus(a, b *v1alpha1.Registry) bool {
	x, y := a.Status.DeepCopy(), b.Status.DeepCopy()
	x.LastSyncTime, y.LastSyncTime = nil, nil
	return statusEqual(x, y)
}

// registryInterval is spec.interval with the API default applied.
func registryInterval(obj *v1alpha1.Registry) time.Duration {
	if obj.Spec.Interval != nil && obj.Spec.Interval.Duration > 0 {
		return obj.Spec.Interval.Duration
	}
	return defaultInterval
}

// registryTimeout is spec.timeout with the API default applied.
func registryTimeout(obj *v1alpha1.Registry) time.Duration {
	if obj.Spec.Timeout != nil && obj.Spec.Timeout.Duration > 0 {
		return obj.Spec.Timeout.Duration
	}
	return defaultTimeout
}

// SetupWithManager registers the controller: Registries on spec change or a reconcile-request
// annotation, the Secrets they reference (metadata only: Secret data is never cached), and the
// RepositoryPolicies that select from them.
func (r *RegistryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		return fmt.Errorf("RegistryReconciler needs an APIReader")
	}
	if r.access == nil {
		r.access = &registryAccess{apiReader: r.APIReader, options: r.Options}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Registry{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(
			enqueueReferrers(r.Client, func() client.ObjectList { return &v1alpha1.RegistryList{} }, indexSecretRefs))).
		Watches(&v1alpha1.RepositoryPolicy{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []ctrl.Request {
			p := o.(*v1alpha1.RepositoryPolicy)
			return []ctrl.Request{{NamespacedName: client.ObjectKey{Namespace: p.Namespace, Name: p.Spec.RegistryRef.Name}}}
		}), builder.WithPredicates(selectionChanged{})).
		Named("registry").
		Complete(r)
}

// selectionChanged passes RepositoryPolicy events that change what the Registry's listing selects:
// creation, deletion, and updates to spec.registryRef, spec.repositories, spec.tags or to whether
// every pattern parses (an invalid one stalls the listing). Other changes (rules, retention,
// verification) are the other controllers' business and cost the registry no listing. An update
// that moves the policy to another Registry is seen as a change here and, for the Registry it
// leaves, at that Registry's next interval.
type selectionChanged struct {
	predicate.Funcs
}

// Update reports whether the update changes the listing's selection.
func (selectionChanged) Update(e event.UpdateEvent) bool {
	o, ok1 := e.ObjectOld.(*v1alpha1.RepositoryPolicy)
	n, ok2 := e.ObjectNew.(*v1alpha1.RepositoryPolicy)
	if !ok1 || !ok2 {
		return true
	}
	return o.Spec.RegistryRef != n.Spec.RegistryRef ||
		!slices.Equal(o.Spec.Repositories, n.Spec.Repositories) ||
		!slices.Equal(o.Spec.Tags.Include, n.Spec.Tags.Include) ||
		!slices.Equal(o.Spec.Tags.Exclude, n.Spec.Tags.Exclude) ||
		policy.InvalidPattern(policyPatterns(&o.Spec)...) != policy.InvalidPattern(policyPatterns(&n.Spec)...)
}

// inventory reads the Registry's ImageAttestations: in place from the informer when the manager
// wired a walker, otherwise through the client.
func (r *RegistryReconciler) inventory() imageWalker {
	if r.images.reader == nil {
		return imageWalker{reader: r.Client}
	}
	return r.images
}
