package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/harbor"
	"github.com/portcullis-dev/portcullis/internal/harbor/harbortest"
)

func (f *harborFixture) retention(project string) (map[string]any, int) {
	f.h.Mu.Lock()
	defer f.h.Mu.Unlock()
	id, _ := strconv.ParseInt(f.h.Projects[project].Metadata["retention_id"], 10, 64)
	runs := 0
	for _, r := range f.h.RetentionRuns {
		if r.PolicyID == id && r.DryRun {
			runs++
		}
	}
	return f.h.Retentions[id], runs
}

// retentionSummary reads a stored Harbor retention policy: its cron and each rule as
// "template=param tags(decoration) repos untagged".
func retentionSummary(pol map[string]any) (string, []string) {
	raw, _ := json.Marshal(pol)
	var p struct {
		Trigger struct {
			Settings struct{ Cron string }
		}
		Rules []struct {
			Template       string
			Params         map[string]float64
			TagSelectors   []struct{ Decoration, Pattern, Extras string } `json:"tag_selectors"`
			ScopeSelectors map[string][]struct{ Pattern string }          `json:"scope_selectors"`
		}
	}
	_ = json.Unmarshal(raw, &p)
	var rules []string
	for _, r := range p.Rules {
		rules = append(rules, fmt.Sprintf("%s=%v %s(%s) %s %s", r.Template, r.Params[r.Template], r.TagSelectors[0].Pattern,
			r.TagSelectors[0].Decoration, r.ScopeSelectors["repository"][0].Pattern, r.TagSelectors[0].Extras))
	}
	return p.Trigger.Settings.Cron, rules
}

// TestHarborRetention: spec.retention becomes the project's Harbor retention policy: created
// unscheduled with a dry run while dryRun is true, scheduled daily once it is false, emptied when
// the spec drops it; a policy with rules made by hand is left alone; a spec Harbor cannot run
// (protectInUse left on) is Stalled.
func TestHarborRetention(t *testing.T) {
	ctx := context.Background()
	f := newHarborFixture(t)
	// team-a/app: v1..v12 pushed 120..10 days ago, and "nightly" 200 days ago.
	var arts []harbortest.Artifact
	for i := 1; i <= 12; i++ {
		arts = append(arts, harbortest.Artifact{Digest: fmt.Sprintf("sha256:%064d", i), Tags: []string{fmt.Sprintf("v%d", i)},
			PushTime: time.Now().Add(-time.Duration(13-i) * 240 * time.Hour)})
	}
	arts = append(arts, harbortest.Artifact{Digest: fmt.Sprintf("sha256:%064d", 99), Tags: []string{"nightly"}, PushTime: time.Now().Add(-200 * 24 * time.Hour)})
	f.h.Mu.Lock()
	f.h.Projects["team-a"].Repositories["app"] = arts
	f.h.Mu.Unlock()
	pol := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "keep", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-a/**"}, Mode: v1alpha1.ModeEnforce,
		Access: &v1alpha1.AccessSpec{Robots: []v1alpha1.Robot{{Name: "ci", Permissions: []string{"repository:pull"}, SecretName: "keep-ci"}}},
		Retention: &v1alpha1.RetentionSpec{ProtectInUse: ptr(false), Rules: []v1alpha1.RetentionRule{
			{Tags: v1alpha1.PatternSelector{Include: []string{"v*", "release-*"}}, KeepLatest: ptr(int32(10)), KeepWithinDays: ptr(int32(30))},
			{Tags: v1alpha1.PatternSelector{Exclude: []string{"v*"}}, KeepLatest: ptr(int32(1)), Untagged: true}}},
	}}
	if err := k8sClient.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	waitFor(t, pol, "Harbor in sync", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	stored, runs := f.retention("team-a")
	cron, rules := retentionSummary(stored)
	wantRules := []string{`latestPushedK=10 {v*,release-*}(matches) ** {"untagged":false}`, `nDaysSinceLastPush=30 {v*,release-*}(matches) ** {"untagged":false}`,
		`latestPushedK=1 v*(excludes) ** {"untagged":true}`}
	if cron != "" || !slices.Equal(rules, wantRules) || runs != 1 {
		t.Fatalf("dry-run retention: cron %q, %d dry runs, rules\n%q\nwant\n%q", cron, runs, rules, wantRules)
	}
	if owned := pol.Status.Enforcement.OwnedRetentionPolicies; len(owned) != 1 || owned[0].Project != "team-a" {
		t.Fatalf("owned retention policies %+v", owned)
	}
	// Harbor's dry run: the 10 latest v* and the latest non-v* are kept, 2 of 13 would go.
	waitFor(t, pol, "the dry run reported", func(p *v1alpha1.RepositoryPolicy) bool {
		return enforced(p) && len(p.Status.Enforcement.RetentionRuns) == 1
	})
	if run := pol.Status.Enforcement.RetentionRuns[0]; !run.DryRun || run.Status != "Succeed" || run.Artifacts != 13 || run.Retained != 11 || run.Project != "team-a" {
		t.Fatalf("retention run %+v, want a dry run keeping 11 of 13", run)
	}
	waitFor(t, pol, "the Harbor note in status.retention", func(p *v1alpha1.RepositoryPolicy) bool {
		return p.Status.Retention != nil && strings.HasPrefix(p.Status.Retention.Message, "Harbor runs retention itself")
	})

	// Nothing changed: no write (the stored rules read back equal).
	writes := f.writes()
	f.kick(t, "keep-ci")
	if n := f.writes() - writes; n != 0 {
		t.Fatalf("a pass with nothing to change made %d writes", n)
	}

	// The robot is renamed, its secretName kept: the new robot's credentials replace the old one's.
	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Access.Robots[0].Name = "deployer" })
	waitFor(t, pol, "the robot renamed", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	renamed := f.robot("robot$team-a+deployer")
	if renamed == nil || f.robot("robot$team-a+ci") != nil {
		t.Fatalf("after the rename: deployer %+v, ci still there: %v", renamed, f.robot("robot$team-a+ci") != nil)
	}
	if user, pass, _ := robotCreds(t, f.ns, "keep-ci"); user != renamed.Name || pass != renamed.Secret {
		t.Fatalf("Secret keep-ci holds %s, want the renamed robot's credentials", user)
	}

	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention.DryRun = ptr(false) })
	waitFor(t, pol, "scheduled", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	stored, runs = f.retention("team-a")
	if cron, rules := retentionSummary(stored); cron != "0 0 0 * * *" || len(rules) != 3 || runs != 1 {
		t.Fatalf("after dryRun false: cron %q, rules %q, %d dry runs", cron, rules, runs)
	}

	patchObject(t, pol, func(p *v1alpha1.RepositoryPolicy) { p.Spec.Retention = nil })
	waitFor(t, pol, "emptied", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.InSync })
	stored, _ = f.retention("team-a")
	if cron, rules := retentionSummary(stored); stored == nil || cron != "" || len(rules) != 0 {
		t.Fatalf("after spec.retention was removed: %v (cron %q, rules %q); want the policy kept, empty and unscheduled", stored, cron, rules)
	}

	// team-b's retention policy was made by hand: left alone.
	pid := f.h.AddProject("team-b", nil)
	c, err := harbor.New(harbor.Config{URL: f.h.URL, Username: f.h.Username, Password: f.h.Password})
	if err != nil {
		t.Fatal(err)
	}
	handID, err := c.CreateRetention(ctx, harbor.RetentionPolicy{ProjectID: pid, Rules: []harbor.RetentionRule{
		{Template: harbor.TemplateAlways, TagPattern: "**", TagDecoration: "matches", RepoPattern: "**"}}})
	if err != nil {
		t.Fatal(err)
	}
	other := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-b/**"}, Mode: v1alpha1.ModeEnforce,
		Retention: &v1alpha1.RetentionSpec{ProtectInUse: ptr(false), Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(int32(3))}}},
	}}
	if err := k8sClient.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, other, "blocked", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.Failed })
	if msg := other.Status.Enforcement.Message; !strings.Contains(msg, fmt.Sprintf("retention policy (ID %d) with 1 rules made outside Portcullis", handID)) {
		t.Errorf("message %q", msg)
	}
	if got, err := c.Retention(ctx, handID); err != nil || len(got.Rules) != 1 || got.Rules[0].Template != harbor.TemplateAlways {
		t.Fatalf("the retention policy made by hand was changed: %+v %v", got, err)
	}

	// team-c names a retention policy Harbor does not find: blocked, not a second create.
	f.h.AddProject("team-c", map[string]string{"retention_id": "9999"})
	dangling := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team-c", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-c/**"}, Mode: v1alpha1.ModeEnforce,
		Retention: &v1alpha1.RetentionSpec{ProtectInUse: ptr(false), Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(int32(3))}}},
	}}
	writes = f.writes()
	if err := k8sClient.Create(ctx, dangling); err != nil {
		t.Fatal(err)
	}
	waitFor(t, dangling, "blocked", func(p *v1alpha1.RepositoryPolicy) bool { return enforced(p) && p.Status.Enforcement.Failed })
	if msg := dangling.Status.Enforcement.Message; !strings.Contains(msg, "names retention policy 9999") || f.writes() != writes {
		t.Fatalf("message %q, %d writes: want blocked with no write", msg, f.writes()-writes)
	}

	// Harbor cannot see Pods: protectInUse left at its default is refused, not weakened.
	inUse := &v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "in-use", Namespace: f.ns}, Spec: v1alpha1.RepositoryPolicySpec{
		RegistryRef: v1alpha1.LocalObjectReference{Name: "harbor"}, Repositories: []string{"team-d/**"}, Mode: v1alpha1.ModeEnforce,
		Retention: &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepLatest: ptr(int32(3))}}},
	}}
	if err := k8sClient.Create(ctx, inUse); err != nil {
		t.Fatal(err)
	}
	waitFor(t, inUse, "NotExpressible", func(p *v1alpha1.RepositoryPolicy) bool {
		return hasCondition(p, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.NotExpressibleReason)
	})
}
