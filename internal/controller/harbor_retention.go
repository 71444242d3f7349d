package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor"
)

// harborRetentionCron schedules a project retention policy when spec.retention.dryRun is false:
// daily at midnight, Harbor's 6-field cron (the UI's "Daily"). With dryRun the policy has no
// schedule and Harbor is asked for a dry run after each change.
const harborRetentionCron = "0 0 0 * * *"

const (
	changeRetentionPolicy = "RetentionPolicy"
	changeRetentionRun    = "RetentionRun"
	actionRun             = "Run"
)

// alternation is one doublestar pattern matching any of patterns ({a,b}).
func alternation(patterns []string) string {
	if len(patterns) == 1 {
		return patterns[0]
	}
	return "{" + strings.Join(patterns, ",") + "}"
}

// desiredRetention maps spec.retention onto the rules of project's Harbor retention policy: one
// retain rule per keepLatest (latestPushedK) and per keepWithinDays (nDaysSinceLastPush), over the
// policy's repository patterns in the project, with the rule's tags as one "matches" or "excludes"
// selector. policy.ResolveHarborScope has refused what this mapping cannot hold. nil: no retention
// is wanted in project.
func desiredRetention(pol *v1alpha1.RepositoryPolicy, repos []string) []harbor.RetentionRule {
	ret := pol.Spec.Retention
	if ret == nil || len(repos) == 0 {
		return nil
	}
	out := []harbor.RetentionRule{}
	for _, r := range ret.Rules {
		tags, deco := "**", "matches"
		switch {
		case len(r.Tags.Include) > 0:
			tags = alternation(r.Tags.Include)
		case len(r.Tags.Exclude) > 0:
			tags, deco = alternation(r.Tags.Exclude), "excludes"
		}
		base := harbor.RetentionRule{TagPattern: tags, TagDecoration: deco, Untagged: r.Untagged, RepoPattern: alternation(repos)}
		if r.KeepLatest != nil {
			rule := base
			rule.Template, rule.Param = harbor.TemplateLatestPushedK, int64(*r.KeepLatest)
			out = append(out, rule)
		}
		if r.KeepWithinDays != nil {
			rule := base
			rule.Template, rule.Param = harbor.TemplateNDaysSinceLastPush, int64(*r.KeepWithinDays)
			out = append(out, rule)
		}
	}
	return out
}

func retentionText(rules []harbor.RetentionRule, cron string) string {
	parts := make([]string, 0, len(rules))
	for _, r := range rules {
		tags := r.TagPattern
		if r.TagDecoration == "excludes" {
			tags = "not " + tags
		}
		if r.Untagged {
			tags += " and untagged"
		}
		parts = append(parts, fmt.Sprintf("%s=%d of tags %s in %s", r.Template, r.Param, tags, r.RepoPattern))
	}
	sched := "no schedule"
	if cron != "" {
		sched = "schedule " + cron
	}
	if len(parts) == 0 {
		return "no rules, " + sched
	}
	return "keep " + strings.Join(parts, "; ") + "; " + sched
}

// planRetention brings project's retention policy to spec.retention: it creates one when the
// project has none, updates one Portcullis owns (or an empty one, which it then owns), and leaves a
// policy with rules made outside Portcullis alone (blocked). A policy Portcullis owns that is no
// longer wanted loses its rules and schedule (it is not deleted, so the project's retention_id
// stays valid). With dryRun, the policy is unscheduled and Harbor is asked for a dry run after
// each change.
func (p *harborPlanner) planRetention(project string, st *harborProject, inScope bool) {
	var want []harbor.RetentionRule
	if inScope {
		want = desiredRetention(p.pol, p.scope.Repositories[project])
	}
	dry := true
	cron := ""
	if ret := p.pol.Spec.Retention; ret != nil && ret.DryRun != nil && !*ret.DryRun {
		dry, cron = false, harborRetentionCron
	}
	ownedIdx := slices.IndexFunc(p.ledger.rets, func(o v1alpha1.OwnedRetentionPolicy) bool { return o.Project == project })
	cur := st.retention
	if ownedIdx >= 0 && (cur == nil || cur.ID != p.ledger.rets[ownedIdx].ID) {
		p.ledger.rets = slices.Delete(p.ledger.rets, ownedIdx, ownedIdx+1) // gone, or replaced by hand
		ownedIdx = -1
	}
	switch {
	case want == nil:
		if ownedIdx >= 0 {
			rec := p.ledger.rets[ownedIdx]
			if len(cur.Rules) == 0 && cur.Cron == "" {
				p.dropRetention(rec) // already empty: nothing of ours left
				return
			}
			empty := harbor.RetentionPolicy{ID: cur.ID, ProjectID: st.project.ID, Rules: []harbor.RetentionRule{}}
			p.add(func(ctx context.Context) error {
				if err := p.w.UpdateRetention(ctx, empty); err != nil {
					return err
				}
				p.dropRetention(rec) // emptied: no longer ours, so whoever fills it next owns it
				return nil
			}, v1alpha1.EnforcementChange{Project: project, Kind: changeRetentionPolicy, Name: fmt.Sprintf("retention policy %d", cur.ID),
				Action: actionDelete, Detail: "no longer in spec.retention: its rules and schedule are removed"})
		}
		return
	case cur == nil && st.danglingRetention > 0:
		p.blocked = append(p.blocked, fmt.Sprintf("project %q names retention policy %d (metadata retention_id), which Harbor does not find; Harbor refuses a second one, so retention is not written until the project's retention is set up again in Harbor",
			project, st.danglingRetention))
		return
	case cur == nil:
		pol := harbor.RetentionPolicy{ProjectID: st.project.ID, Rules: want, Cron: cron}
		changes := []v1alpha1.EnforcementChange{{Project: project, Kind: changeRetentionPolicy, Name: "retention policy", Action: actionCreate,
			Detail: truncate(retentionText(want, cron), 509)}}
		if dry {
			changes = append(changes, v1alpha1.EnforcementChange{Project: project, Kind: changeRetentionRun, Name: "dry run", Action: actionRun,
				Detail: "Harbor records what the rules would delete; nothing is deleted"})
		}
		p.add(func(ctx context.Context) error {
			id, err := p.w.CreateRetention(ctx, pol)
			if err != nil {
				return err
			}
			p.ledger.rets = append(p.ledger.rets, v1alpha1.OwnedRetentionPolicy{Project: project, ID: id})
			if dry {
				return p.w.TriggerRetention(ctx, id, true)
			}
			return nil
		}, changes...)
		return
	case ownedIdx < 0 && len(cur.Rules) > 0 && slices.Equal(cur.Rules, want) && cur.Cron == cron:
		// Exactly what this policy would write (its record was lost to a failed status write, or
		// it was set up by hand the same way): taken over without a write.
		p.ledger.rets = append(p.ledger.rets, v1alpha1.OwnedRetentionPolicy{Project: project, ID: cur.ID})
		return
	case ownedIdx < 0 && len(cur.Rules) > 0:
		p.blocked = append(p.blocked, fmt.Sprintf("project %q has a retention policy (ID %d) with %d rules made outside Portcullis: it is left alone; remove its rules in Harbor to let this policy manage retention",
			project, cur.ID, len(cur.Rules)))
		return
	}
	if ownedIdx >= 0 && slices.Equal(cur.Rules, want) && cur.Cron == cron {
		return
	}
	pol := harbor.RetentionPolicy{ID: cur.ID, ProjectID: st.project.ID, Rules: want, Cron: cron}
	changes := []v1alpha1.EnforcementChange{{Project: project, Kind: changeRetentionPolicy, Name: fmt.Sprintf("retention policy %d", cur.ID),
		Action: actionUpdate, Detail: truncate(retentionText(cur.Rules, cur.Cron)+" -> "+retentionText(want, cron), 509)}}
	if dry {
		changes = append(changes, v1alpha1.EnforcementChange{Project: project, Kind: changeRetentionRun, Name: "dry run", Action: actionRun,
			Detail: "Harbor records what the rules would delete; nothing is deleted"})
	}
	adopt := ownedIdx < 0
	p.add(func(ctx context.Context) error {
		if err := p.w.UpdateRetention(ctx, pol); err != nil {
			return err
		}
		if adopt {
			p.ledger.rets = append(p.ledger.rets, v1alpha1.OwnedRetentionPolicy{Project: project, ID: pol.ID})
		}
		if dry {
			return p.w.TriggerRetention(ctx, pol.ID, true)
		}
		return nil
	}, changes...)
}

func (p *harborPlanner) dropRetention(rec v1alpha1.OwnedRetentionPolicy) {
	p.ledger.rets = slices.DeleteFunc(p.ledger.rets, func(o v1alpha1.OwnedRetentionPolicy) bool { return o == rec })
}
