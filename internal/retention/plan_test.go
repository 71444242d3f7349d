package retention

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

func keepLatest(name, repos string, n int32, tags ...string) v1alpha1.RepositoryPolicy {
	return v1alpha1.RepositoryPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: v1alpha1.RepositoryPolicySpec{
		Repositories: []string{repos}, Tags: v1alpha1.PatternSelector{Include: tags},
		Retention: &v1alpha1.RetentionSpec{Rules: []v1alpha1.RetentionRule{{KeepLatest: &n}}}}}
}

// TestPlanProtects: what Plan protects beyond pol's own rules: what another retention policy
// governing the repository keeps, digests with a tag pol does not govern, digests in use; not what a
// policy of another repository, pol's own stored copy, or a policy without retention would keep.
func TestPlanProtects(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	d := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	listing := []policy.RetentionImage{
		{Digest: d("1"), Tags: []string{"v1"}, Created: now.AddDate(0, 0, -50)},
		{Digest: d("2"), Tags: []string{"v2"}, Created: now.AddDate(0, 0, -40)},
		{Digest: d("3"), Tags: []string{"v3", "stable"}, Created: now.AddDate(0, 0, -30)},
		{Digest: d("4"), Tags: []string{"v4"}, Created: now.AddDate(0, 0, -20)},
		{Digest: d("5"), Tags: []string{"v5"}, Created: now.AddDate(0, 0, -10)},
	}
	pol := keepLatest("mine", "team/*", 1, "v*")
	outcome := func(others []v1alpha1.RepositoryPolicy, inUse map[string]bool) map[string]string {
		p := Plan(&pol, others, "team/app", listing, inUse, now)
		out := map[string]string{}
		for _, it := range p.Keep {
			out[it.Digest] = it.Reason
		}
		for _, it := range p.Delete {
			out[it.Digest] = "Delete:" + it.Reason
		}
		return out
	}
	alone := outcome(nil, nil)
	want := map[string]string{d("5"): policy.RetainedByRule, d("3"): policy.RetainedOutsidePolicy,
		d("4"): "Delete:" + policy.DeleteNoRuleRetains, d("2"): "Delete:" + policy.DeleteNoRuleRetains, d("1"): "Delete:" + policy.DeleteNoRuleRetains}
	for dg, reason := range want {
		if alone[dg] != reason {
			t.Errorf("alone: %s is %q, want %q", dg[:8], alone[dg], reason)
		}
	}
	noRetention := keepLatest("audit-only", "**", 10)
	noRetention.Spec.Retention = nil
	ignored := []v1alpha1.RepositoryPolicy{keepLatest("elsewhere", "other/*", 10), keepLatest("mine", "**", 10), noRetention}
	if got := outcome(ignored, nil); got[d("4")] != "Delete:"+policy.DeleteNoRuleRetains {
		t.Errorf("a policy of another repository, pol's own stored copy and a policy without retention protect nothing: v4 is %q", got[d("4")])
	}
	got := outcome([]v1alpha1.RepositoryPolicy{keepLatest("wider", "team/**", 2, "v*")}, map[string]bool{d("1"): true})
	// A policy that does not govern v4's tag keeps nothing for pol: v4 stays pol's to delete.
	devOnly := keepLatest("dev-only", "team/*", 10, "*-dev")
	if got := outcome([]v1alpha1.RepositoryPolicy{devOnly}, nil); got[d("4")] != "Delete:"+policy.DeleteNoRuleRetains {
		t.Errorf("a policy governing other tags protected v4: %q", got[d("4")])
	}
	// Protected digests are not ranked: pol's keepLatest 1 then keeps v2, the newest of the rest.
	if got[d("4")] != policy.RetainedByOtherPolicy || got[d("5")] != policy.RetainedByOtherPolicy || got[d("1")] != policy.RetainedInUse ||
		got[d("2")] != policy.RetainedByRule {
		t.Errorf("another policy keeping v4 and v5, v1 in use: %v", got)
	}
}
