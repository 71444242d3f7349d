package retention

import (
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Plan plans one repository's listing for pol (which must have spec.retention) at now, as the
// manager does: rules are a union of what is kept across policies, so what the other retention
// policies governing the repository (others; pol itself is skipped by name) keep is protected
// (policy.RetainedByOtherPolicy), and so are digests with a tag pol does not govern
// (policy.RetainedOutsidePolicy) and the digests in inUse (nil: none; see PodImages.InUse). A digest
// another policy keeps only because it does not govern its tags is not kept by that policy: its
// tags are left to the policies that govern them (a baseline excluding "*-dev" tags does not stop a
// team's policy from cleaning them). Pure.
func Plan(pol *v1alpha1.RepositoryPolicy, others []v1alpha1.RepositoryPolicy, repo string, listing []policy.RetentionImage,
	inUse map[string]bool, now time.Time) policy.RetentionPlan {
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
	return policy.PlanRetention(policy.RetentionInput{Images: listing, Rules: pol.Spec.Retention.Rules, TagFilter: pol.Spec.Tags,
		Protected: protected, InUse: inUse, Now: now})
}
