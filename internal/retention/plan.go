package retention

import (
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Plan plans one repository's listing for pol (which must have spec.retention) at now, as the
// manager does: policy.PlanRetention of pol's rules with Protect's protections and the digests in
// inUse (nil: none; see PodImages.InUse) kept. Pure.
func Plan(pol *v1alpha1.RepositoryPolicy, others []v1alpha1.RepositoryPolicy, repo string, listing []policy.RetentionImage,
	inUse map[string]bool, now time.Time) policy.RetentionPlan {
	return PlanProtected(pol, Protect(pol, others, repo, listing, now), listing, inUse, now)
}

// PlanProtected is Plan with the protections already computed by Protect for the same listing, so
// that planning again (with in-use digests, say) does not plan the other policies again.
func PlanProtected(pol *v1alpha1.RepositoryPolicy, protected map[string]string, listing []policy.RetentionImage,
	inUse map[string]bool, now time.Time) policy.RetentionPlan {
	return policy.PlanRetention(policy.RetentionInput{Images: listing, Rules: pol.Spec.Retention.Rules, TagFilter: pol.Spec.Tags,
		Protected: protected, InUse: inUse, Now: now})
}

// Protect is what a plan of repo's listing for pol keeps beyond pol's own rules, with the reason:
// rules are a union of what is kept across policies, so what the other retention policies governing
// the repository (others; pol itself is skipped by name) keep is protected
// (policy.RetainedByOtherPolicy), and so are digests with a tag pol does not govern
// (policy.RetainedOutsidePolicy). A digest another policy keeps only because it does not govern its
// tags is not kept by that policy: its tags are left to the policies that govern them (a baseline
// excluding "*-dev" tags does not stop a team's policy from cleaning them). Pure.
func Protect(pol *v1alpha1.RepositoryPolicy, others []v1alpha1.RepositoryPolicy, repo string, listing []policy.RetentionImage,
	now time.Time) map[string]string {
	protected := OutsidePolicy(listing, pol.Spec.Tags)
	for _, o := range others {
		if o.Name == pol.Name && o.Namespace == pol.Namespace || o.Spec.Retention == nil || !policy.MatchAny(o.Spec.Repositories, repo) {
			continue
		}
		theirs := policy.PlanRetention(policy.RetentionInput{Images: listing, Rules: o.Spec.Retention.Rules, TagFilter: o.Spec.Tags,
			Protected: OutsidePolicy(listing, o.Spec.Tags), Now: now})
		for _, it := range theirs.Keep {
			if protected[it.Digest] == "" && it.Reason != policy.RetainedOutsidePolicy {
				protected[it.Digest] = policy.RetainedByOtherPolicy
			}
		}
	}
	return protected
}
