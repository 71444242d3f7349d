package controller

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// maxEnforcementChanges bounds status.enforcement.changes (the API's MaxItems).
const maxEnforcementChanges = 50

// maxMessage bounds status.enforcement.message (MaxLength 1024, truncate adds "...").
const maxMessage = 1021

// HarborReconciler writes what a RepositoryPolicy owns to a Harbor registry (provider Harbor):
// project members, robot accounts (their credentials into Secrets), immutable tag rules, and the
// project security switches. Each pass reads the projects, computes the difference, shows it in
// status.enforcement, and in mode Enforce makes exactly that difference; Audit writes nothing. It
// only ever removes what it recorded as created (status.enforcement.owned*, robot descriptions), and
// writes nothing for a policy that another, older policy's projects conflict with, or that Harbor
// cannot express (the RepositoryPolicy controller reports both as Stalled). Passes run on every
// policy change, when a robot Secret changes or disappears, and once per Registry interval, which
// repairs drift (a robot deleted by hand is created again).
type HarborReconciler struct {
	client.Client
	// APIReader lists the policy's robot Secrets uncached.
	APIReader client.Reader
	Recorder  events.EventRecorder
	access    *registryAccess
	now       func() time.Time
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=create;patch;delete
// +kubebuilder:rbac:groups=registry.portcullis.dev,resources=repositorypolicies,verbs=get;patch

// harborFinalizer keeps an Enforce policy that wrote to Harbor until what it created there (robots,
// members, immutable tag rules, retention rules) is removed.
const harborFinalizer = "registry.portcullis.dev/harbor-cleanup"

// Reconcile runs one enforcement pass for a RepositoryPolicy. The policy is read uncached: its
// status holds the record of what Portcullis created, which must never be taken from a stale copy,
// and every status write is guarded by its resourceVersion.
func (r *HarborReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pol := &v1alpha1.RepositoryPolicy{}
	// From the cache first: a policy of another kind of registry costs no API request.
	if err := r.Get(ctx, req.NamespacedName, pol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !controllerutil.ContainsFinalizer(pol, harborFinalizer) {
		reg := &v1alpha1.Registry{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, reg); err != nil ||
			reg.Spec.Provider != v1alpha1.ProviderHarbor {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	if err := r.APIReader.Get(ctx, req.NamespacedName, pol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	deleting := pol.DeletionTimestamp != nil
	if deleting && !controllerutil.ContainsFinalizer(pol, harborFinalizer) {
		return ctrl.Result{}, nil
	}
	reg := &v1alpha1.Registry{}
	err := r.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: pol.Spec.RegistryRef.Name}, reg)
	switch {
	case client.IgnoreNotFound(err) != nil:
		return ctrl.Result{}, err
	case err != nil || reg.Spec.Provider != v1alpha1.ProviderHarbor || (deleting && (reg.Spec.Suspend || pol.Spec.Mode != v1alpha1.ModeEnforce)):
		// No Harbor to reach (the Registry is gone, not Harbor, suspended) or mode Audit, which
		// writes nothing: a deletion goes ahead and leaves Harbor as it is, which is said loudly.
		if deleting && r.ownsAnything(ctx, pol) {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeWarning, "HarborCleanupSkipped", "Delete",
				"deleted without removing what it created in Harbor (robots, members, rules; see status.enforcement): the Registry is gone, suspended or not Harbor, or the policy is in mode Audit")
		}
		return ctrl.Result{}, r.dropFinalizer(ctx, pol)
	case reg.Spec.Suspend:
		return ctrl.Result{}, nil
	}
	scope := policy.HarborScope{Repositories: map[string][]string{}} // deleting, or nothing to write: clean up only
	switch {
	case deleting:
	case policy.WritesToHarbor(&pol.Spec):
		var ok bool
		if scope, _, ok, err = harborClaim(ctx, r.Client, pol, reg); !ok || err != nil {
			return ctrl.Result{}, err // Stalled by the policy's own controller, which says why
		}
	case !r.ownsAnything(ctx, pol):
		base := pol.DeepCopy()
		pol.Status.Enforcement = nil
		if err := r.patch(ctx, pol, base); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.dropFinalizer(ctx, pol)
	}
	if pol.Spec.Mode == v1alpha1.ModeEnforce && !deleting && !controllerutil.ContainsFinalizer(pol, harborFinalizer) {
		base := pol.DeepCopy()
		controllerutil.AddFinalizer(pol, harborFinalizer)
		if err := r.Patch(ctx, pol, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, err
		}
	}
	base := pol.DeepCopy()
	// write records status.enforcement. This controller is its only writer, so on a conflict (the
	// RepositoryPolicy or retention controller wrote other status fields meanwhile) it reads the
	// policy again and writes the same record on top: the record of what was just created in
	// Harbor must not be lost to a race.
	write := func(st *v1alpha1.EnforcementStatus) error {
		enforced := pol.Status.LastEnforcedTime
		for attempt := 0; ; attempt++ {
			pol.Status.Enforcement, pol.Status.LastEnforcedTime = st, enforced
			err := r.patch(ctx, pol, base)
			if err == nil {
				base = pol.DeepCopy()
				return nil
			}
			if !apierrors.IsConflict(err) || attempt == 4 {
				return err
			}
			fresh := &v1alpha1.RepositoryPolicy{}
			if err := r.APIReader.Get(ctx, req.NamespacedName, fresh); err != nil {
				return err
			}
			*pol, base = *fresh, fresh.DeepCopy()
		}
	}
	now := r.now()
	st, next, announce, err := r.pass(ctx, pol, reg, scope, now, write)
	if st != nil {
		if perr := write(st); perr != nil {
			return ctrl.Result{}, perr
		}
		if announce != nil {
			announce()
		}
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if deleting {
		if st == nil || !st.InSync {
			return ctrl.Result{RequeueAfter: time.Minute}, nil // what it created is not all gone yet
		}
		return ctrl.Result{}, r.dropFinalizer(ctx, pol)
	}
	after := registryInterval(reg)
	if !next.IsZero() && next.Sub(now) < after {
		after = max(next.Sub(now), time.Second)
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

func (r *HarborReconciler) dropFinalizer(ctx context.Context, pol *v1alpha1.RepositoryPolicy) error {
	if !controllerutil.ContainsFinalizer(pol, harborFinalizer) {
		return nil
	}
	base := pol.DeepCopy()
	controllerutil.RemoveFinalizer(pol, harborFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, pol, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})))
}

// registryKey identifies a Harbor for the record of what Portcullis created there: a policy moved
// to another Harbor (registryRef or spec.url changed) starts a new record, so that it never
// removes objects of the same name or ID there.
func registryKey(reg *v1alpha1.Registry) string {
	u, err := url.Parse(reg.Spec.URL)
	if err != nil {
		return reg.Spec.URL
	}
	host := strings.ToLower(u.Hostname())
	if p := u.Port(); p != "" && !(u.Scheme == "https" && p == "443") && !(u.Scheme == "http" && p == "80") {
		host += ":" + p
	}
	return host // the scheme is left out: moving from http to https is the same Harbor
}

// pass reads the projects, plans, shows the plan in status (write), and in mode Enforce applies
// it step by step; a failed step does not stop the independent steps after it. It returns the
// status to record, when the next rotation or allowlist expiry is due, the events to send once the
// status is written, and an error to retry with backoff.
func (r *HarborReconciler) pass(ctx context.Context, pol *v1alpha1.RepositoryPolicy, reg *v1alpha1.Registry, scope policy.HarborScope,
	now time.Time, write func(*v1alpha1.EnforcementStatus) error) (*v1alpha1.EnforcementStatus, time.Time, func(), error) {
	dryRun := pol.Spec.Mode != v1alpha1.ModeEnforce
	st := &v1alpha1.EnforcementStatus{ObservedGeneration: pol.Generation, Registry: registryKey(reg), Projects: scope.Projects, DryRun: dryRun}
	ledger := &harborLedger{}
	prev := pol.Status.Enforcement
	if prev != nil && prev.Registry != "" && prev.Registry != st.Registry {
		prev = nil // another Harbor: what was created in the old one is not looked for here
	}
	if prev != nil {
		ledger.members = append(ledger.members, prev.OwnedMembers...)
		ledger.rules = append(ledger.rules, prev.OwnedImmutableRules...)
		ledger.rets = append(ledger.rets, prev.OwnedRetentionPolicies...)
	}
	// warnOnce sends a Warning when the failure is new, not on every retry.
	warnOnce := func(msg string) func() {
		if prev != nil && prev.Failed && prev.Message == msg {
			return func() {}
		}
		return func() {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeWarning, "EnforcementFailed", "Enforce", "%s", msg)
		}
	}
	// keepProjects keeps the projects of the last pass on record until a pass succeeds, so that
	// what was created in a project the policy let go is still looked for and removed.
	keepProjects := func() {
		if prev != nil {
			st.Projects = sortedUnion(st.Projects, prev.Projects)
		}
	}
	record := func(err error) (*v1alpha1.EnforcementStatus, time.Time, func(), error) {
		st.OwnedMembers, st.OwnedImmutableRules, st.OwnedRetentionPolicies = ledger.members, ledger.rules, ledger.rets
		st.Failed, st.InSync, st.Message = true, false, truncate(err.Error(), maxMessage)
		if prev != nil { // keep the last known difference on display
			st.Changes, st.PendingChanges = prev.Changes, prev.PendingChanges
		}
		keepProjects()
		return st, time.Time{}, warnOnce(st.Message), err
	}
	hc, err := r.access.harbor(ctx, reg)
	if err != nil {
		return record(err)
	}
	u, _ := url.Parse(reg.Spec.URL)
	w := &harborWrites{Client: hc, k8s: r.Client, pol: pol, host: u.Host, now: r.now}
	secrets, taken, err := r.robotSecrets(ctx, pol)
	if err != nil {
		return record(err)
	}
	state, err := readProjects(ctx, hc, scope, prev)
	if err != nil {
		return record(err)
	}
	ldapNames := map[string]string{}
	if a := pol.Spec.Access; a != nil && len(scope.Projects) > 0 {
		for _, m := range a.Members {
			if m.Group == "" || m.GroupType != v1alpha1.GroupLDAP {
				continue
			}
			name, ok, err := hc.LDAPGroupName(ctx, m.Group)
			if err != nil {
				return record(err)
			}
			if ok {
				ldapNames[m.Group] = name
			}
		}
	}
	pl := &harborPlanner{pol: pol, scope: scope, state: state, secrets: secrets, taken: taken, ldapNames: ldapNames, now: now, w: w, ledger: ledger}
	pl.plan()
	var changes []v1alpha1.EnforcementChange
	for _, step := range pl.steps {
		changes = append(changes, step.changes...)
	}
	if !dryRun && len(pl.steps) > 0 {
		// Shown in status first: the plan, and the memberships about to be added as owned.
		shown := st.DeepCopy()
		for _, step := range pl.steps {
			if step.claim != nil {
				step.claim()
			}
		}
		shown.Changes, shown.PendingChanges = changes[:min(len(changes), maxEnforcementChanges)], int32(len(changes))
		shown.OwnedMembers, shown.OwnedImmutableRules, shown.OwnedRetentionPolicies = ledger.members, ledger.rules, ledger.rets
		shown.Message = fmt.Sprintf("making %d changes", len(changes))
		keepProjectsOf(shown, prev)
		if err := write(shown); err != nil {
			return nil, time.Time{}, nil, fmt.Errorf("showing the plan in status before writing to Harbor: %w", err)
		}
	}
	var errs []error
	made, i := 0, 0
	for _, step := range pl.steps {
		n := len(step.changes)
		if !dryRun {
			if err := step.apply(ctx); err != nil {
				errs = append(errs, err)
			} else {
				for j := i; j < i+n; j++ {
					changes[j].Done = true
				}
				made += n
			}
		}
		i += n
	}
	for _, c := range changes {
		if !c.Done {
			st.PendingChanges++
		}
	}
	if made > 0 {
		enforcementChanges.WithLabelValues(reg.Namespace+"/"+reg.Name, pol.Name).Add(float64(made))
	}
	st.Changes = changes[:min(len(changes), maxEnforcementChanges)]
	quietAfterWrite := len(changes) == 0 && len(pl.blocked) == 0 && prev != nil && prev.ObservedGeneration == pol.Generation &&
		!prev.DryRun && !prev.Failed && prev.PendingChanges == 0
	if quietAfterWrite {
		st.Changes = prev.Changes // keep showing the last changes made (a pass that finds none follows each write)
	}
	st.OwnedMembers, st.OwnedImmutableRules, st.OwnedRetentionPolicies = ledger.members, ledger.rules, ledger.rets
	st.Failed = len(errs) > 0 || len(pl.blocked) > 0
	st.InSync = !st.Failed && st.PendingChanges == 0
	if st.Failed {
		keepProjects()
	}
	var events []func()
	if made > 0 {
		note := fmt.Sprintf("made %d changes in Harbor: %s", made, changeList(changes, true))
		events = append(events, func() {
			r.Recorder.Eventf(pol, nil, corev1.EventTypeNormal, "EnforcementApplied", "Enforce", "%s", truncate(note, maxMessage))
		})
	}
	var applyErr error
	switch {
	case len(errs) > 0:
		applyErr = errors.Join(errs...)
		st.Message = truncate(fmt.Sprintf("made %d of %d changes; %d steps failed, the first: %v", made, len(changes), len(errs), errs[0]), maxMessage)
	case len(pl.blocked) > 0:
		st.Message = truncate(strings.Join(pl.blocked, "; "), maxMessage)
	case dryRun && len(changes) > 0:
		st.Message = truncate(fmt.Sprintf("mode Audit: %d changes to make, none made: %s", len(changes), changeList(changes, false)), maxMessage)
	case dryRun:
		st.Message = "mode Audit: Harbor already holds what the policy owns"
	case made > 0:
		st.Message = fmt.Sprintf("made %d changes", made)
	case quietAfterWrite:
		st.Message = prev.Message
	default:
		st.Message = "Harbor holds what the policy owns"
	}
	if st.InSync && !dryRun && (made > 0 || prev == nil || prev.ObservedGeneration != pol.Generation || !prev.InSync) {
		pol.Status.LastEnforcedTime = &metav1.Time{Time: now}
	}
	if st.Failed {
		events = append(events, warnOnce(st.Message))
	}
	announce := func() {
		for _, e := range events {
			e()
		}
	}
	return st, earliest(pl.nextRotation, pl.nextExpiry), announce, applyErr
}

func keepProjectsOf(st, prev *v1alpha1.EnforcementStatus) {
	if prev != nil {
		st.Projects = sortedUnion(st.Projects, prev.Projects)
	}
}

func sortedUnion(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func changeList(changes []v1alpha1.EnforcementChange, done bool) string {
	var parts []string
	for _, c := range changes {
		if c.Done == done {
			parts = append(parts, fmt.Sprintf("%s %s %s %s", c.Action, c.Kind, c.Name, c.Project))
		}
	}
	return strings.Join(parts, ", ")
}

// readProjects reads every project in scope, and those the last pass claimed (so that what
// Portcullis created there is removed when the policy lets them go). A project that is gone is
// marked missing.
func readProjects(ctx context.Context, hc *harbor.Client, scope policy.HarborScope, prev *v1alpha1.EnforcementStatus) (map[string]*harborProject, error) {
	names := append([]string(nil), scope.Projects...)
	if prev != nil {
		names = append(names, prev.Projects...)
		for _, m := range prev.OwnedMembers {
			names = append(names, m.Project)
		}
		for _, m := range prev.OwnedImmutableRules {
			names = append(names, m.Project)
		}
		for _, m := range prev.OwnedRetentionPolicies {
			names = append(names, m.Project)
		}
	}
	out := map[string]*harborProject{}
	for _, name := range names {
		if _, done := out[name]; done {
			continue
		}
		p, err := hc.Project(ctx, name)
		if errors.Is(err, harbor.ErrNotFound) {
			// Kept on record: a 404 may come from a proxy or a wrong URL as well as a deleted
			// project, and a record of something gone is harmless.
			out[name] = &harborProject{missing: true}
			continue
		}
		if err != nil {
			return nil, err
		}
		st := &harborProject{project: p}
		if st.members, err = hc.Members(ctx, name); err != nil {
			return nil, err
		}
		if st.robots, err = hc.Robots(ctx, p.ID); err != nil {
			return nil, err
		}
		if st.rules, err = hc.ImmutableRules(ctx, name); err != nil {
			return nil, err
		}
		if id, perr := strconv.ParseInt(p.Metadata["retention_id"], 10, 64); perr == nil && id > 0 {
			ret, err := hc.Retention(ctx, id)
			switch {
			case err == nil:
				st.retention = &ret
			case errors.Is(err, harbor.ErrNotFound):
				st.danglingRetention = id
			default:
				return nil, err
			}
		}
		out[name] = st
	}
	return out, nil
}

// ownsAnything reports whether the policy has anything in Harbor or a robot Secret to clean up.
func (r *HarborReconciler) ownsAnything(ctx context.Context, pol *v1alpha1.RepositoryPolicy) bool {
	if e := pol.Status.Enforcement; e != nil && (len(e.OwnedMembers) > 0 || len(e.OwnedImmutableRules) > 0 || len(e.OwnedRetentionPolicies) > 0 || len(e.Projects) > 0) {
		return true
	}
	secrets, _, err := r.robotSecrets(ctx, pol)
	return err != nil || len(secrets) > 0
}

// robotSecrets lists the policy's robot Secrets (labelled with a robot, controlled by the policy)
// by name, and the names of the Secrets spec.access.robots names that something else owns.
func (r *HarborReconciler) robotSecrets(ctx context.Context, pol *v1alpha1.RepositoryPolicy) (map[string]*corev1.Secret, map[string]bool, error) {
	list := &corev1.SecretList{}
	if err := r.APIReader.List(ctx, list, client.InNamespace(pol.Namespace), client.HasLabels{v1alpha1.RobotLabel}); err != nil {
		return nil, nil, fmt.Errorf("listing robot Secrets: %w", err)
	}
	mine := map[string]*corev1.Secret{}
	for i := range list.Items {
		if metav1.IsControlledBy(&list.Items[i], pol) {
			mine[list.Items[i].Name] = &list.Items[i]
		}
	}
	taken := map[string]bool{}
	if a := pol.Spec.Access; a != nil {
		for _, rb := range a.Robots {
			if mine[rb.SecretName] != nil {
				continue
			}
			m := &metav1.PartialObjectMetadata{}
			m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
			err := r.Get(ctx, client.ObjectKey{Namespace: pol.Namespace, Name: rb.SecretName}, m)
			if err == nil {
				taken[rb.SecretName] = true
			} else if client.IgnoreNotFound(err) != nil {
				return nil, nil, fmt.Errorf("reading Secret %q: %w", rb.SecretName, err)
			}
		}
	}
	return mine, taken, nil
}

// patch writes status.enforcement and lastEnforcedTime, guarded by the resourceVersion read (a
// conflict is retried with a fresh read), and nothing when they did not change.
func (r *HarborReconciler) patch(ctx context.Context, pol, base *v1alpha1.RepositoryPolicy) error {
	if equality.Semantic.DeepEqual(pol.Status.Enforcement, base.Status.Enforcement) &&
		equality.Semantic.DeepEqual(pol.Status.LastEnforcedTime, base.Status.LastEnforcedTime) {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, pol, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})))
}

// SetupWithManager registers the controller: policies on spec change, the other policies of their
// Registry on spec change (a project conflict may resolve), Registry changes, and robot Secrets
// (metadata only) when they change or disappear.
func (r *HarborReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil || r.access == nil {
		return fmt.Errorf("HarborReconciler needs an APIReader and registry access")
	}
	if r.now == nil {
		r.now = time.Now
	}
	newList := func() client.ObjectList { return &v1alpha1.RepositoryPolicyList{} }
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.RepositoryPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.RepositoryPolicy{}, handler.EnqueueRequestsFromMapFunc(harborClaimants(r.Client)), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.Registry{}, handler.EnqueueRequestsFromMapFunc(enqueueReferrers(r.Client, newList, indexRegistryRef)),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.RepositoryPolicy{}, handler.OnlyControllerOwner()),
			builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[v1alpha1.RobotLabel] != "" }))).
		Named("harbor").
		Complete(r)
}
