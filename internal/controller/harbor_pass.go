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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

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
		if prev != nil { // keep the last known difference and runs on display
			st.Changes, st.PendingChanges, st.RetentionRuns = prev.Changes, prev.PendingChanges, prev.RetentionRuns
		}
		keepProjects()
		return st, time.Time{}, warnOnce(st.Message), err
	}
	hc, err := r.access.harbor(ctx, reg)
	if err != nil {
		return record(err)
	}
	u, _ := url.Parse(reg.Spec.URL)
	w := &harborWrites{Client: hc, k8s: r.Client, reader: r.APIReader, pol: pol, host: u.Host, now: r.now}
	secrets, taken, err := r.robotSecrets(ctx, pol)
	if err != nil {
		return record(err)
	}
	var secretsDenied string
	if a := pol.Spec.Access; (a != nil && len(a.Robots) > 0) || len(secrets) > 0 {
		if secretsDenied, err = secretWritesDenied(ctx, r.Client, pol.Namespace); err != nil {
			return record(err)
		}
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
	pl := &harborPlanner{pol: pol, scope: scope, state: state, secrets: secrets, taken: taken, secretsDenied: secretsDenied, ldapNames: ldapNames, now: now, w: w, ledger: ledger}
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
	runsDue := r.retentionRuns(ctx, hc, st, prev)
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
	next := earliest(earliest(pl.nextRotation, pl.nextExpiry), runsDue)
	if secretsDenied != "" {
		// A RoleBinding is not watched: look again soon, so the robots follow the admin's grant
		// within a minute instead of an interval.
		next = earliest(next, now.Add(secretsRecheck))
	}
	return st, next, announce, applyErr
}

// retentionRunPoll is how soon a pass looks again at a retention run that has not finished.
const retentionRunPoll = 30 * time.Second

// retentionRuns records the latest run of each owned retention policy in st, and returns when to
// look again (zero when every run has finished). A run that cannot be read keeps what the last pass
// recorded for it: it is only a report.
func (r *HarborReconciler) retentionRuns(ctx context.Context, hc *harbor.Client, st, prev *v1alpha1.EnforcementStatus) time.Time {
	var due time.Time
	for _, o := range st.OwnedRetentionPolicies {
		run, ok, err := hc.LatestRetentionRun(ctx, o.ID)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "reading the latest retention run", "project", o.Project, "retentionPolicy", o.ID)
			if prev != nil {
				for _, p := range prev.RetentionRuns {
					if p.Project == o.Project && p.PolicyID == o.ID {
						st.RetentionRuns = append(st.RetentionRuns, p)
					}
				}
			}
			continue
		}
		if !ok {
			continue
		}
		st.RetentionRuns = append(st.RetentionRuns, v1alpha1.HarborRetentionRun{Project: o.Project, PolicyID: o.ID, RunID: run.ID, DryRun: run.DryRun,
			Status: run.Status, Artifacts: run.Total, Retained: run.Retained})
		if slices.Contains([]string{"Pending", "Running", "Scheduled"}, run.Status) {
			due = r.now().Add(retentionRunPoll)
		}
	}
	return due
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
