package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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
	"github.com/portcullis-dev/portcullis/internal/retention"
)

// Retention defaults (the API's kubebuilder defaults, for objects written before them).
const (
	defaultMaxDeletionsPerPass = 10
	maxRetentionItems          = 20
	maxRetentionItemTags       = 10
)

// RetentionReconciler applies a RepositoryPolicy's spec.retention to a plain OCI registry (provider
// Generic; on Harbor the HarborReconciler pushes the rules to Harbor's own retention): once per
// Registry interval, and whenever the policy changes, it plans each governed repository with
// policy.PlanRetention from the inventory the Registry's listing keeps (the ImageAttestations' tags,
// platforms and supply-chain tags; creation times read once per digest and cached), so a plan that
// keeps everything costs no listing of its own. A repository whose plan deletes something is listed
// from the registry and planned again from that listing (the inventory holds only selected tags), the
// plan is written to status.retention, and only in mode Enforce with dryRun false are up to
// maxDeletionsPerPass digests deleted by digest. Every pass
// plans afresh, so a pass that stopped midway (restart, error, budget) resumes without deleting
// anything twice: deleted digests are gone from the listing, and a digest already gone counts as
// done. Deletions in a repository happen only when a second listing, just before them, matches the
// one planned from, so a tag pushed meanwhile is never lost. It writes only status.retention (a
// merge patch) and events; the RepositoryPolicy controller owns the conditions.
type RetentionReconciler struct {
	client.Client
	// APIReader lists Pods uncached (protectInUse) only when a plan would delete something.
	APIReader client.Reader
	Recorder  events.EventRecorder
	access    *registryAccess
	// images reads the inventory in place; its zero value lists through Client.
	images imageWalker
	// now is time.Now, replaceable in tests.
	now func() time.Time

	// cache keeps creation times and index children across passes.
	cache retention.Cache
	// memory holds a retentionMemory per policy (client.ObjectKey).
	memory sync.Map
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=list
// +kubebuilder:rbac:groups=apps,resources=deployments;replicasets;statefulsets;daemonsets,verbs=list
// +kubebuilder:rbac:groups=batch,resources=jobs;cronjobs,verbs=list

// retentionMemory is what the manager remembers about a policy's passes, authoritative over the
// cache and the status (which may lag, or fail to be written): the digests the previous pass planned
// to delete, and when and for which generation it last deleted.
type retentionMemory struct {
	// lastPass and passGeneration: when the last pass ran and for which generation (the status keeps
	// the time of the last plan that changed, so an unchanged plan costs no status write).
	lastPass           time.Time
	passGeneration     int64
	planned            map[string]bool // repository@digest
	lastDeleting       time.Time
	deletingGeneration int64
}

// passDeadline bounds one retention pass.
const passDeadline = 30 * time.Minute

// nothingGovernedRetry is how soon a policy whose repositories have no image in the inventory yet
// is looked at again.
const nothingGovernedRetry = 10 * time.Second

// errNothingGoverned: the Registry's inventory has no image in the policy's repositories.
var errNothingGoverned = errors.New("no repository of the policy in the Registry's inventory")

// Reconcile runs one retention pass for a RepositoryPolicy when one is due: when the policy changed,
// and then once per Registry interval.
func (r *RetentionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pol := &v1alpha1.RepositoryPolicy{}
	if err := r.Get(ctx, req.NamespacedName, pol); err != nil {
		if client.IgnoreNotFound(err) == nil {
			r.memory.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	base := pol.DeepCopy()
	if pol.Spec.Retention == nil {
		r.memory.Delete(req.NamespacedName)
		pol.Status.Retention = nil
		return ctrl.Result{}, r.patch(ctx, pol, base)
	}
	reg := &v1alpha1.Registry{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, reg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // the policy's own controller reports it
	}
	interval := registryInterval(reg)
	now := r.now()
	if reg.Status.LastSyncTime == nil || reg.Spec.Suspend {
		return ctrl.Result{}, nil // not listed yet, or suspended: a Registry change brings the policy back
	}
	mem := r.remember(req.NamespacedName)
	var last time.Time
	if st := pol.Status.Retention; st != nil && st.ObservedGeneration == pol.Generation {
		last = st.PlanTime.Time
	}
	if mem.passGeneration == pol.Generation && mem.lastPass.After(last) {
		last = mem.lastPass
	}
	if !last.IsZero() && now.Sub(last) < interval {
		return ctrl.Result{RequeueAfter: interval - now.Sub(last)}, nil
	}
	if p := policy.InvalidPattern(policyPatterns(&pol.Spec)...); p != "" {
		return ctrl.Result{}, nil // Stalled by the policy's own controller
	}
	passCtx, cancel := context.WithTimeout(ctx, passDeadline)
	defer cancel()
	st, announce, err := r.pass(passCtx, pol, reg, now)
	if errors.Is(err, errNothingGoverned) {
		// The inventory has no image of the policy's repositories yet (or it is not in the cache
		// yet): look again soon rather than record an empty plan for a whole interval.
		return ctrl.Result{RequeueAfter: min(interval, nothingGovernedRetry)}, nil
	}
	if st != nil {
		mem.lastPass, mem.passGeneration = now, pol.Generation
		if prev := base.Status.Retention; prev != nil {
			same := *st
			same.PlanTime = prev.PlanTime
			if equality.Semantic.DeepEqual(&same, prev) {
				st = prev // the same plan as before: no status write
			}
		}
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
//
// Deleting is guarded beyond the plan: a digest is deleted only when the previous pass of this
// manager also planned to delete it (two listings apart), when the repository's listing is complete
// and a second listing just before deleting matches it, and at most once per Registry interval for a
// generation of the policy (a failed status write or a stale cache cannot start another round).
// Before each deletion the policy and its Registry are read again, and a change of generation, mode
// or dryRun, a deletion, or a suspended Registry stops the pass.
func (r *RetentionReconciler) pass(ctx context.Context, pol *v1alpha1.RepositoryPolicy, reg *v1alpha1.Registry, now time.Time) (*v1alpha1.RetentionStatus, func(), error) {
	spec := pol.Spec.Retention
	key := client.ObjectKeyFromObject(pol)
	st := &v1alpha1.RetentionStatus{PlanTime: metav1.NewTime(now), ObservedGeneration: pol.Generation,
		DryRun: spec.DryRun == nil || *spec.DryRun || pol.Spec.Mode != v1alpha1.ModeEnforce}
	if reg.Spec.Provider == v1alpha1.ProviderHarbor {
		st.Message = "Harbor runs retention itself: the rules are pushed to the project's retention policy (status.enforcement shows them), and Portcullis deletes nothing here"
		return st, nil, nil
	}
	rc, o, ok, err := r.access.client(ctx, reg)
	if err != nil || !ok {
		st.Message = "the Registry cannot be reached as configured: " + o.message
		return st, nil, err
	}
	repos, inventory, others, err := r.governedRepositories(ctx, pol)
	if err != nil {
		return nil, nil, err
	}
	if len(repos) == 0 {
		return nil, nil, errNothingGoverned
	}
	mem := r.remember(key)
	previous := mem.planned
	mem.planned = map[string]bool{}
	budget := defaultMaxDeletionsPerPass
	if spec.MaxDeletionsPerPass != nil {
		budget = int(*spec.MaxDeletionsPerPass)
	}
	mayDelete := !st.DryRun && budget > 0 && (mem.deletingGeneration != pol.Generation || now.Sub(mem.lastDeleting) >= registryInterval(reg))
	protectInUse := spec.ProtectInUse == nil || *spec.ProtectInUse
	var stopped error
	var pods *retention.PodImages
	var notes []string
	var deleted, planned, flagged []v1alpha1.RetentionItem
	for _, repo := range repos {
		// The plan comes from the inventory the Registry's listing keeps (no second listing of the
		// registry); a plan that would delete something lists the repository itself and plans again
		// from that, and a deleting pass lists once more just before deleting.
		lst, err := retention.FromInventory(ctx, rc, &r.cache, repo, inventory[repo])
		if err != nil {
			stopped = fmt.Errorf("reading %s: %w", repo, err)
			break
		}
		if mayDelete {
			pods = nil // a deleting pass reads the Pods again for each repository
		}
		plan, err := r.plan(ctx, pol, others, repo, lst.Images, protectInUse, &pods, now)
		if err != nil {
			stopped = err
			break
		}
		if len(plan.Delete) > 0 {
			// The inventory holds only the tags some policy selects, and it may be an interval
			// old: a plan that deletes anything, dry run or not, is made again from the registry.
			if lst, err = retention.List(ctx, rc, &r.cache, repo); err != nil {
				stopped = fmt.Errorf("listing %s: %w", repo, err)
				break
			}
			if plan, err = r.plan(ctx, pol, others, repo, lst.Images, protectInUse, &pods, now); err != nil {
				stopped = err
				break
			}
		}
		st.Repositories++
		st.Kept += int32(len(plan.Keep))
		st.ToDelete += int32(len(plan.Delete))
		for _, it := range plan.Keep {
			switch it.Reason {
			case policy.RetainedTimeUnknown, policy.RetainedTimeImplausible, policy.RetainedSubjectUnknown:
				flagged = append(flagged, retentionItem(repo, it, "Keep"))
			}
		}
		remaining := plan.Delete
		if mayDelete && budget > 0 && len(plan.Delete) > 0 && stopped == nil {
			units, held := confirmedUnits(plan, repo, previous)
			if held > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d deletions wait for a second plan", repo, held))
			}
			again, err := retention.List(ctx, rc, &r.cache, repo)
			tagsBefore, tagsNow, shrank := tagsShrank(inventory[repo], again.Images)
			var kept, keptDigest string
			if len(units) > 0 && err == nil && !shrank {
				kept, keptDigest, err = stillTagged(ctx, rc, repo, units, inventory[repo], again.Images)
			}
			switch {
			case len(units) == 0:
			case !lst.Complete:
				notes = append(notes, fmt.Sprintf("%s: a tag did not resolve while listing; no deletion this pass", repo))
			case err != nil:
				stopped = fmt.Errorf("listing %s again before deleting: %w", repo, err)
			case !again.Complete || !retention.SameListing(lst.Images, again.Images):
				notes = append(notes, fmt.Sprintf("%s changed during the pass; its deletions wait for the next pass", repo))
			case shrank:
				notes = append(notes, fmt.Sprintf("%s: its tag list returned %d tags where the Registry's listings saw %d; no deletion until a listing confirms it", repo, tagsNow, tagsBefore))
			case kept != "":
				notes = append(notes, fmt.Sprintf("%s: tag %s still points at %s though the tag list left it out (a truncated listing?); no deletion this pass", repo, kept, keptDigest))
			default:
				var done []policy.PlanItem
				done, stopped = r.deleteUnits(ctx, rc, reg, pol, repo, units, &budget)
				if len(done) > 0 {
					mem.lastDeleting, mem.deletingGeneration = now, pol.Generation
				}
				st.Deleted += int32(len(done))
				gone := map[string]bool{}
				for _, it := range done {
					gone[it.Digest] = true
					deleted = append(deleted, retentionItem(repo, it, "Deleted"))
				}
				remaining = slices.DeleteFunc(slices.Clone(plan.Delete), func(it policy.PlanItem) bool { return gone[it.Digest] })
			}
		}
		for _, it := range remaining {
			mem.planned[repo+"@"+it.Digest] = true
			planned = append(planned, retentionItem(repo, it, "Delete"))
		}
	}
	items := slices.Concat(deleted, planned, flagged)
	st.Items = items[:min(maxRetentionItems, len(items))]
	switch {
	case stopped != nil:
		st.Message = truncate(stopped.Error(), 1000)
	default:
		st.Message = truncate(strings.Join(append([]string{r.summary(st, pol)}, notes...), "; "), 1000)
	}
	return st, r.announce(pol, st, deleted, stopped), stopped
}

// plan plans one repository for pol (retention.Plan). With protectInUse, a plan that deletes
// something is made again protecting the digests that Pods and workloads use (read once per pass for
// planning, afresh for each repository in a pass that deletes).
func (r *RetentionReconciler) plan(ctx context.Context, pol *v1alpha1.RepositoryPolicy, others []v1alpha1.RepositoryPolicy, repo string,
	listing []policy.RetentionImage, protectInUse bool, pods **retention.PodImages, now time.Time) (policy.RetentionPlan, error) {
	protected := retention.Protect(pol, others, repo, listing, now)
	plan := retention.PlanProtected(pol, protected, listing, nil, now)
	if len(plan.Delete) == 0 || !protectInUse {
		return plan, nil
	}
	if *pods == nil {
		p, err := retention.ListPodImages(ctx, r.APIReader)
		if err != nil {
			return plan, fmt.Errorf("listing Pods and workloads (protectInUse): %w", err)
		}
		*pods = p
	}
	return retention.PlanProtected(pol, protected, listing, (*pods).InUse(repo, listing), now), nil
}

func (r *RetentionReconciler) remember(key client.ObjectKey) *retentionMemory {
	m, _ := r.memory.LoadOrStore(key, &retentionMemory{})
	return m.(*retentionMemory)
}

func (r *RetentionReconciler) summary(st *v1alpha1.RetentionStatus, pol *v1alpha1.RepositoryPolicy) string {
	switch {
	case st.DryRun && pol.Spec.Mode != v1alpha1.ModeEnforce:
		return fmt.Sprintf("mode Audit: %d of %d digests in %s would be deleted; nothing is deleted", st.ToDelete, st.ToDelete+st.Kept, repositories(st.Repositories))
	case st.DryRun:
		return fmt.Sprintf("dry run: %d of %d digests in %s would be deleted", st.ToDelete, st.ToDelete+st.Kept, repositories(st.Repositories))
	default:
		return fmt.Sprintf("deleted %d of the %d digests the plan deletes, in %s", st.Deleted, st.ToDelete, repositories(st.Repositories))
	}
}

// repositories is "1 repository" or "N repositories".
func repositories(n int32) string {
	if n == 1 {
		return "1 repository"
	}
	return fmt.Sprintf("%d repositories", n)
}

// announce returns the event for the pass: deletions (naming the first digests), a failure, or a
// dry-run plan whose size changed since the last pass; nil otherwise. A pass that deleted and then
// failed sends both.
func (r *RetentionReconciler) announce(pol *v1alpha1.RepositoryPolicy, st *v1alpha1.RetentionStatus, deleted []v1alpha1.RetentionItem, stopped error) func() {
	if r.Recorder == nil {
		return nil
	}
	var sends []func()
	if len(deleted) > 0 {
		var names []string
		for _, it := range deleted[:min(5, len(deleted))] {
			names = append(names, it.Repository+"@"+it.Digest)
		}
		note := fmt.Sprintf("deleted %d digests: %s", len(deleted), strings.Join(names, ", "))
		if len(deleted) > 5 {
			note += ", ..."
		}
		sends = append(sends, func() {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeNormal, "RetentionDeleted", "Retention", "%s", note)
		})
	}
	prev := pol.Status.Retention
	switch {
	case stopped != nil:
		sends = append(sends, func() {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeWarning, "RetentionFailed", "Retention", "%s", st.Message)
		})
	case len(deleted) == 0 && (prev == nil || prev.ToDelete != st.ToDelete || prev.DryRun != st.DryRun):
		sends = append(sends, func() {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeNormal, "RetentionPlanned", "Retention", "%s", st.Message)
		})
	}
	if len(sends) == 0 {
		return nil
	}
	return func() {
		for _, f := range sends {
			f()
		}
	}
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
