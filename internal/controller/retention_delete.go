package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/registry"
)

// confirmedUnits returns the deletion units whose every digest the previous pass also planned to
// delete, and how many planned deletions wait for that.
func confirmedUnits(plan policy.RetentionPlan, repo string, previous map[string]bool) ([][]policy.PlanItem, int) {
	var out [][]policy.PlanItem
	held := 0
	for _, u := range plan.Units() {
		if slices.ContainsFunc(u, func(it policy.PlanItem) bool { return !previous[repo+"@"+it.Digest] }) {
			held += len(u)
			continue
		}
		out = append(out, u)
	}
	return out, held
}

// deleteUnits deletes whole units (an image, then its accessories), in plan order, while the
// remaining budget covers the next unit. Before each deletion it checks, from the manager's cache,
// that the policy and its Registry still allow it. It logs every deletion and returns those done (a
// digest already gone counts: an earlier pass or a person deleted it) and what stopped it.
func (r *RetentionReconciler) deleteUnits(ctx context.Context, rc *registry.Client, reg *v1alpha1.Registry, pol *v1alpha1.RepositoryPolicy,
	repo string, units [][]policy.PlanItem, budget *int) ([]policy.PlanItem, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("repository", repo)
	var done []policy.PlanItem
	for _, u := range units {
		if len(u) > *budget {
			if len(done) == 0 && *budget == r.budgetOf(pol) {
				return done, fmt.Errorf("%s@%s and its %d accessories exceed maxDeletionsPerPass (%d); raise it to let retention proceed",
					repo, u[0].Digest, len(u)-1, *budget)
			}
			break
		}
		for _, it := range u {
			if why := r.stillAllowed(ctx, pol, reg); why != "" {
				return done, fmt.Errorf("deletions stopped: %s", why)
			}
			err := rc.DeleteManifest(ctx, repo, it.Digest)
			switch {
			case err == nil:
				retentionDeletions.WithLabelValues(reg.Namespace+"/"+reg.Name, pol.Name).Inc()
				log.Info("retention deleted a digest", "digest", it.Digest, "tags", it.Tags, "reason", it.Reason)
			case errors.Is(err, registry.ErrNotFound):
				log.Info("retention: digest already gone", "digest", it.Digest)
			case errors.Is(err, registry.ErrUnsupported):
				return done, fmt.Errorf("the registry does not allow deleting manifests (405): turn deletion on (CNCF Distribution: storage.delete.enabled) or set spec.retention.dryRun: %w", err)
			default:
				return done, err
			}
			done = append(done, it)
			*budget--
		}
	}
	return done, nil
}

func (r *RetentionReconciler) budgetOf(pol *v1alpha1.RepositoryPolicy) int {
	if pol.Spec.Retention.MaxDeletionsPerPass != nil {
		return int(*pol.Spec.Retention.MaxDeletionsPerPass)
	}
	return defaultMaxDeletionsPerPass
}

// stillAllowed re-reads the policy and its Registry (cache) and says why deleting must stop, or "".
func (r *RetentionReconciler) stillAllowed(ctx context.Context, pol *v1alpha1.RepositoryPolicy, reg *v1alpha1.Registry) string {
	cur := &v1alpha1.RepositoryPolicy{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(pol), cur); err != nil {
		return "reading the policy: " + err.Error()
	}
	switch rs := cur.Spec.Retention; {
	case cur.DeletionTimestamp != nil:
		return "the policy is being deleted"
	case cur.Generation != pol.Generation:
		return "the policy changed"
	case rs == nil || rs.DryRun == nil || *rs.DryRun || cur.Spec.Mode != v1alpha1.ModeEnforce:
		return "the policy no longer deletes"
	}
	now := &v1alpha1.Registry{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(reg), now); err != nil {
		return "reading the Registry: " + err.Error()
	}
	if now.Spec.Suspend || now.Generation != reg.Generation {
		return "the Registry changed or was suspended"
	}
	return ""
}
