package controller

import (
	"context"
	"fmt"
	"strings"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// harborOwned reports whether a policy has something to write to reg's Harbor API.
func harborOwned(pol *v1alpha1.RepositoryPolicy, reg *v1alpha1.Registry) bool {
	return reg.Spec.Provider == v1alpha1.ProviderHarbor && policy.WritesToHarbor(&pol.Spec)
}

// harborClaim checks what a policy with something to write to a Harbor Registry claims there: the
// Registry must have credentials, Harbor must be able to express the policy, and no earlier Enforce
// policy of the same Harbor (through any Registry, in any namespace) may own one of its projects.
// Both the RepositoryPolicy controller (which sets Stalled) and the Harbor controller (which then
// writes nothing) run it, so they agree.
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
	// Claimants are the Enforce policies, in any namespace, whose Registry is the same Harbor.
	regs := &v1alpha1.RegistryList{}
	if err := c.List(ctx, regs); err != nil {
		return policy.HarborScope{}, failed(v1alpha1.ReadFailedReason, fmt.Errorf("listing Registries: %w", err)), false, err
	}
	same := map[types.NamespacedName]bool{}
	for i := range regs.Items {
		// A Registry without credentials stalls its policies, which then claim nothing.
		if r := &regs.Items[i]; r.Spec.Provider == v1alpha1.ProviderHarbor && r.Spec.SecretRef != nil && registryKey(r) == registryKey(reg) {
			same[client.ObjectKeyFromObject(r)] = true
		}
	}
	list := &v1alpha1.RepositoryPolicyList{}
	if err := c.List(ctx, list); err != nil {
		return policy.HarborScope{}, failed(v1alpha1.ReadFailedReason, fmt.Errorf("listing RepositoryPolicies: %w", err)), false, err
	}
	var others []policy.HarborClaimant
	for i := range list.Items {
		o := &list.Items[i]
		if (o.Namespace == pol.Namespace && o.Name == pol.Name) || o.Spec.Mode != v1alpha1.ModeEnforce || !policy.WritesToHarbor(&o.Spec) ||
			(o.DeletionTimestamp != nil && !controllerutil.ContainsFinalizer(o, harborFinalizer)) || // still cleaning up: still the owner
			!same[types.NamespacedName{Namespace: o.Namespace, Name: o.Spec.RegistryRef.Name}] {
			continue
		}
		s, err := policy.ResolveHarborScope(&o.Spec)
		if err != nil || s.Projects == nil {
			continue // stalled itself: claims nothing
		}
		others = append(others, policy.HarborClaimant{Name: o.Namespace + "/" + o.Name, Created: o.CreationTimestamp.Time, Projects: s.Projects,
			Holding: holding(o, reg)})
	}
	self := policy.HarborClaimant{Name: pol.Namespace + "/" + pol.Name, Created: pol.CreationTimestamp.Time, Projects: scope.Projects,
		Holding: holding(pol, reg)}
	if project, owner, conflict := policy.FirstClaim(self, others); conflict {
		return policy.HarborScope{}, stalled(v1alpha1.ProjectConflictReason, "%s", conflictMessage(project, owner, pol.Namespace)), false, nil
	}
	return scope, outcome{}, true, nil
}

// harborClaimants maps a change of a policy that writes (or wrote) to a Harbor to the other policies
// whose project claims it may change, across namespaces: every policy that writes to a Harbor for
// the RepositoryPolicy controller (whose pass costs no registry request), and only those stalled by
// a project conflict for the Harbor controller (onlyConflicted), so an edit does not cost every
// Harbor policy a pass of Harbor requests.
func harborClaimants(c client.Reader, onlyConflicted bool) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		changed, ok := o.(*v1alpha1.RepositoryPolicy)
		if !ok || (!policy.WritesToHarbor(&changed.Spec) && !controllerutil.ContainsFinalizer(changed, harborFinalizer)) {
			return nil
		}
		list := &v1alpha1.RepositoryPolicyList{}
		if err := c.List(ctx, list); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing RepositoryPolicies")
			return nil
		}
		var reqs []reconcile.Request
		for i := range list.Items {
			p := &list.Items[i]
			if !policy.WritesToHarbor(&p.Spec) || (p.Namespace == changed.Namespace && p.Name == changed.Name) {
				continue
			}
			if cond := apimeta.FindStatusCondition(p.Status.Conditions, v1alpha1.StalledCondition); onlyConflicted &&
				(cond == nil || cond.Reason != v1alpha1.ProjectConflictReason) {
				continue
			}
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(p)})
		}
		return reqs
	}
}

// holding reports whether a policy has been writing to reg's Harbor: its status records a pass in
// mode Enforce there.
func holding(pol *v1alpha1.RepositoryPolicy, reg *v1alpha1.Registry) bool {
	e := pol.Status.Enforcement
	return e != nil && !e.DryRun && len(e.Projects) > 0 && (e.Registry == "" || e.Registry == registryKey(reg))
}

// conflictMessage says which policy owns project. An owner in another namespace (owner is
// "namespace/name") is not named: one tenant's status must not disclose another tenant's
// namespaces and policies.
func conflictMessage(project, owner, namespace string) string {
	who := "RepositoryPolicy " + owner
	if !strings.HasPrefix(owner, namespace+"/") {
		who = "a RepositoryPolicy in another namespace (a cluster admin can find it)"
	}
	return fmt.Sprintf("Harbor project %q is already owned by %s (created earlier, also mode Enforce, same Harbor); "+
		"this policy writes nothing to the registry until one of them lets the project go", project, who)
}
