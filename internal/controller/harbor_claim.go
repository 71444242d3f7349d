package controller

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// harborOwned reports whether a policy has something to write to reg's Harbor API.
func harborOwned(pol *v1alpha1.RepositoryPolicy, reg *v1alpha1.Registry) bool {
	return reg.Spec.Provider == v1alpha1.ProviderHarbor && policy.WritesToHarbor(&pol.Spec)
}

// harborClaim checks what a policy with something to write to a Harbor Registry claims there: the
// Registry must have credentials, Harbor must be able to express the policy, and no earlier Enforce
// policy of the same Registry may claim one of its projects. Both the RepositoryPolicy controller
// (which sets Stalled) and the Harbor controller (which then writes nothing) run it, so they agree.
func harborClaim(ctx context.Context, c client.Reader, pol *v1alpha1.RepositoryPolicy, reg *v1alpha1.Registry) (policy.HarborScope, outcome, bool, error) {
	if reg.Spec.SecretRef == nil {
		return policy.HarborScope{}, stalled(v1alpha1.InvalidSpecReason,
			"Registry %q has no secretRef: reading and writing Harbor projects needs a user or system robot account with project admin rights", reg.Name), false, nil
	}
	scope, err := policy.ResolveHarborScope(&pol.Spec)
	if err != nil {
		return policy.HarborScope{}, stalled(v1alpha1.NotExpressibleReason, "%v", err), false, nil
	}
	if pol.Spec.Mode != v1alpha1.ModeEnforce {
		return scope, outcome{}, true, nil // Audit writes nothing, so it claims nothing
	}
	list := &v1alpha1.RepositoryPolicyList{}
	if err := c.List(ctx, list, client.InNamespace(pol.Namespace), client.MatchingFields{indexRegistryRef: reg.Name}); err != nil {
		return policy.HarborScope{}, failed(v1alpha1.ReadFailedReason, fmt.Errorf("listing the policies of Registry %q: %w", reg.Name, err)), false, err
	}
	var others []policy.HarborClaimant
	for i := range list.Items {
		o := &list.Items[i]
		if o.Name == pol.Name || o.Spec.Mode != v1alpha1.ModeEnforce || !policy.WritesToHarbor(&o.Spec) || o.DeletionTimestamp != nil {
			continue
		}
		s, err := policy.ResolveHarborScope(&o.Spec)
		if err != nil {
			continue // stalled itself: claims nothing
		}
		others = append(others, policy.HarborClaimant{Name: o.Name, Created: o.CreationTimestamp.Time, Projects: s.Projects})
	}
	self := policy.HarborClaimant{Name: pol.Name, Created: pol.CreationTimestamp.Time, Projects: scope.Projects}
	if project, owner, conflict := policy.FirstClaim(self, others); conflict {
		return policy.HarborScope{}, stalled(v1alpha1.ProjectConflictReason,
			"Harbor project %q is already owned by RepositoryPolicy %q (created earlier, also mode Enforce); this policy writes nothing to the registry until one of them lets the project go",
			project, owner), false, nil
	}
	return scope, outcome{}, true, nil
}
