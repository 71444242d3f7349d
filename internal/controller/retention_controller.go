package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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

// Retention defaults (the API's kubebuilder defaults, for objects written before them).
const (
	defaultMaxDeletionsPerPass = 10
	maxRetentionItems          = 20
	maxRetentionItemTags       = 10
)

// RetentionReconciler applies a RepositoryPolicy's spec.retention to a plain OCI registry (provider
// Generic): once per Registry interval, and whenever the policy changes, it lists each governed
// repository's tags, digests and creation times, plans with policy.PlanRetention, writes the plan to
// status.retention, and, only in mode Enforce with dryRun false, deletes up to maxDeletionsPerPass
// digests by digest. Every pass plans afresh from the registry, so a pass that stopped midway
// (restart, error, budget) resumes without deleting anything twice: deleted digests are gone from the
// listing, and a digest already gone counts as done. Deletions in a repository happen only when a
// second listing, just before them, matches the one planned from, so a tag pushed meanwhile is never
// lost. It writes only status.retention (a merge patch) and events; the RepositoryPolicy controller
// owns the conditions.
type RetentionReconciler struct {
	client.Client
	// APIReader lists Pods uncached (protectInUse) only when a plan would delete something.
	APIReader client.Reader
	Recorder  events.EventRecorder
	access    *registryAccess
	// now is time.Now, replaceable in tests.
	now func() time.Time

	created createdTimes
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=list

// Reconcile runs one retention pass for a RepositoryPolicy when one is due.
func (r *RetentionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pol := &v1alpha1.RepositoryPolicy{}
	if err := r.Get(ctx, req.NamespacedName, pol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := pol.DeepCopy()
	if pol.Spec.Retention == nil {
		pol.Status.Retention = nil
		return ctrl.Result{}, r.patch(ctx, pol, base)
	}
	reg := &v1alpha1.Registry{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, reg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // the policy's own controller reports it
	}
	interval := registryInterval(reg)
	now := r.now()
	if reg.Status.LastSyncTime == nil {
		return ctrl.Result{}, nil // not listed yet: the Registry's first listing brings the policy back
	}
	// A plan is due when the policy changed, or after each new listing of the Registry, at most once
	// per interval.
	if st := pol.Status.Retention; st != nil && st.ObservedGeneration == pol.Generation &&
		(now.Sub(st.PlanTime.Time) < interval || !reg.Status.LastSyncTime.After(st.PlanTime.Time)) {
		return ctrl.Result{RequeueAfter: max(interval-now.Sub(st.PlanTime.Time), time.Second)}, nil
	}
	if p := policy.InvalidPattern(policyPatterns(&pol.Spec)...); p != "" {
		return ctrl.Result{}, nil // Stalled by the policy's own controller
	}
	st, announce, err := r.pass(ctx, pol, reg, now)
	if st != nil {
		pol.Status.Retention = st
		if perr := r.patch(ctx, pol, base); perr != nil {
			return ctrl.Result{}, perr
		}
		if announce != nil {
			announce()
		}
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: interval}, nil
}

func (r *RetentionReconciler) patch(ctx context.Context, pol, base *v1alpha1.RepositoryPolicy) error {
	if equality.Semantic.DeepEqual(pol.Status.Retention, base.Status.Retention) {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, pol, client.MergeFrom(base)))
}

// pass plans every governed repository and deletes what the plan and the budget allow. It returns
// the status to record, the event that announces it (sent once the status is written), and an error
// to retry with backoff (the status then says what stopped the pass).
func (r *RetentionReconciler) pass(ctx context.Context, pol *v1alpha1.RepositoryPolicy, reg *v1alpha1.Registry, now time.Time) (*v1alpha1.RetentionStatus, func(), error) {
	spec := pol.Spec.Retention
	st := &v1alpha1.RetentionStatus{PlanTime: metav1.NewTime(now), ObservedGeneration: pol.Generation,
		DryRun: spec.DryRun == nil || *spec.DryRun || pol.Spec.Mode != v1alpha1.ModeEnforce}
	if reg.Spec.Provider == v1alpha1.ProviderHarbor {
		st.Message = "Harbor runs retention itself; pushing the rules to Harbor's retention API is not implemented yet, so nothing is planned"
		return st, nil, nil
	}
	rc, o, ok, err := r.access.client(ctx, reg)
	if err != nil || !ok {
		st.Message = "the Registry cannot be reached as configured: " + o.message
		return st, nil, err
	}
	repos, err := r.governedRepositories(ctx, pol)
	if err != nil {
		return nil, nil, err
	}
	budget := defaultMaxDeletionsPerPass
	if spec.MaxDeletionsPerPass != nil {
		budget = int(*spec.MaxDeletionsPerPass)
	}
	protectInUse := spec.ProtectInUse == nil || *spec.ProtectInUse
	var inUse *podImages
	var stopped error
	var deletions, kept []v1alpha1.RetentionItem
	for _, repo := range repos {
		listing, err := r.list(ctx, rc, repo)
		if err != nil {
			stopped = fmt.Errorf("listing %s: %w", repo, err)
			break
		}
		in := policy.RetentionInput{Images: listing, Rules: spec.Rules, Now: now, Protected: outsidePolicy(listing, pol.Spec.Tags)}
		plan := policy.PlanRetention(in)
		if len(plan.Delete) > 0 && protectInUse {
			if inUse == nil {
				if inUse, err = listPodImages(ctx, r.APIReader); err != nil {
					stopped = fmt.Errorf("listing Pods (protectInUse): %w", err)
					break
				}
			}
			in.InUse = inUse.inUse(registryHost(reg), repo, listing)
			plan = policy.PlanRetention(in)
		}
		st.Repositories++
		st.Kept += int32(len(plan.Keep))
		st.ToDelete += int32(len(plan.Delete))
		for _, it := range plan.Keep {
			switch it.Reason {
			case policy.RetainedTimeUnknown, policy.RetainedTimeImplausible, policy.RetainedSubjectUnknown:
				kept = append(kept, retentionItem(repo, it, "Keep"))
			}
		}
		planned := plan.Delete
		if !st.DryRun && budget > 0 && len(planned) > 0 && stopped == nil {
			again, err := r.list(ctx, rc, repo)
			switch {
			case err != nil:
				stopped = fmt.Errorf("listing %s again before deleting: %w", repo, err)
			case !sameListing(listing, again):
				st.Message = fmt.Sprintf("%s changed during the pass; its deletions wait for the next pass", repo)
			default:
				var done int
				done, stopped = r.deleteDigests(ctx, rc, reg, pol, repo, planned, budget, &deletions)
				budget -= done
				st.Deleted += int32(done)
				planned = planned[min(done, len(planned)):]
			}
		}
		for _, it := range planned {
			deletions = append(deletions, retentionItem(repo, it, "Delete"))
		}
	}
	st.Items = append(deletions, kept...)[:min(maxRetentionItems, len(deletions)+len(kept))]
	if stopped != nil {
		st.Message = truncate(stopped.Error(), 1000)
	} else if st.Message == "" {
		st.Message = r.summary(st, pol)
	}
	return st, r.announce(pol, st, stopped), stopped
}

// deleteDigests deletes planned digests of repo, oldest first, up to budget. It records each
// deletion and returns how many were done (a digest already gone counts) and what stopped it.
func (r *RetentionReconciler) deleteDigests(ctx context.Context, rc *registry.Client, reg *v1alpha1.Registry, pol *v1alpha1.RepositoryPolicy,
	repo string, planned []policy.PlanItem, budget int, out *[]v1alpha1.RetentionItem) (int, error) {
	done := 0
	for _, it := range planned {
		if done == budget {
			break
		}
		err := rc.DeleteManifest(ctx, repo, it.Digest)
		switch {
		case err == nil:
			retentionDeletions.WithLabelValues(reg.Namespace+"/"+reg.Name, pol.Name).Inc()
		case errors.Is(err, registry.ErrNotFound): // deleted by an earlier, interrupted pass or by hand
		case errors.Is(err, registry.ErrUnsupported):
			return done, fmt.Errorf("the registry does not allow deleting manifests (405): turn deletion on (CNCF Distribution: storage.delete.enabled) or set spec.retention.dryRun: %w", err)
		default:
			return done, err
		}
		*out = append(*out, retentionItem(repo, it, "Deleted"))
		done++
	}
	return done, nil
}

func (r *RetentionReconciler) summary(st *v1alpha1.RetentionStatus, pol *v1alpha1.RepositoryPolicy) string {
	switch {
	case st.DryRun && pol.Spec.Mode != v1alpha1.ModeEnforce:
		return fmt.Sprintf("mode Audit: %d of %d digests in %d repositories would be deleted; nothing is deleted", st.ToDelete, st.ToDelete+st.Kept, st.Repositories)
	case st.DryRun:
		return fmt.Sprintf("dry run: %d of %d digests in %d repositories would be deleted", st.ToDelete, st.ToDelete+st.Kept, st.Repositories)
	default:
		return fmt.Sprintf("deleted %d of the %d digests the plan deletes, in %d repositories", st.Deleted, st.ToDelete, st.Repositories)
	}
}

// announce returns the event for the pass: a failure, deletions, or a dry-run plan whose size
// changed since the last pass; nil otherwise.
func (r *RetentionReconciler) announce(pol *v1alpha1.RepositoryPolicy, st *v1alpha1.RetentionStatus, stopped error) func() {
	if r.Recorder == nil {
		return nil
	}
	prev := pol.Status.Retention
	switch {
	case stopped != nil:
		return func() {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeWarning, "RetentionFailed", "Retention", "%s", st.Message)
		}
	case st.Deleted > 0:
		return func() {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeNormal, "RetentionDeleted", "Retention", "%s", st.Message)
		}
	case st.DryRun && (prev == nil || prev.ToDelete != st.ToDelete || !prev.DryRun):
		return func() {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeNormal, "RetentionPlanned", "Retention", "%s", st.Message)
		}
	}
	return nil
}

// SetupWithManager registers the controller on RepositoryPolicies with a retention spec, on spec
// changes; passes then come back every Registry interval.
func (r *RetentionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil || r.access == nil {
		return fmt.Errorf("RetentionReconciler needs an APIReader and registry access")
	}
	if r.now == nil {
		r.now = time.Now
	}
	newList := func() client.ObjectList { return &v1alpha1.RepositoryPolicyList{} }
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.RepositoryPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.Registry{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexRegistryRef)),
			builder.WithPredicates(newListing())).
		Named("retention").
		Complete(r)
}

// newListing passes Registry updates that record a new listing (status.lastSyncTime moved).
func newListing() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		DeleteFunc: func(event.DeleteEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*v1alpha1.Registry), e.ObjectNew.(*v1alpha1.Registry)
			return n.Status.LastSyncTime != nil && (o.Status.LastSyncTime == nil || !o.Status.LastSyncTime.Equal(n.Status.LastSyncTime))
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
