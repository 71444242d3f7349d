package controller

import (
	"context"
	"fmt"
	"slices"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// governedRepositories lists, sorted, the repositories of the policy's Registry that it governs, as
// the Registry's inventory (its ImageAttestations) knows them, with each repository's
// ImageAttestations, and the Registry's other policies with a retention spec (their keeps are
// protected).
func (r *RetentionReconciler) governedRepositories(ctx context.Context, pol *v1alpha1.RepositoryPolicy) ([]string, map[string][]*v1alpha1.ImageAttestation, []v1alpha1.RepositoryPolicy, error) {
	// Read only: the cache's own objects, neither copied nor listed into a new array.
	images := r.images
	if images.reader == nil {
		images = imageWalker{reader: r.Client}
	}
	byRepo := map[string][]*v1alpha1.ImageAttestation{}
	err := images.each(ctx, pol.Namespace, pol.Spec.RegistryRef.Name, func(ia *v1alpha1.ImageAttestation) {
		if policy.MatchAny(pol.Spec.Repositories, ia.Spec.Repository) {
			byRepo[ia.Spec.Repository] = append(byRepo[ia.Spec.Repository], ia)
		}
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listing ImageAttestations: %w", err)
	}
	repos := make([]string, 0, len(byRepo))
	for repo := range byRepo {
		repos = append(repos, repo)
	}
	slices.Sort(repos)
	all := &v1alpha1.RepositoryPolicyList{}
	if err := r.List(ctx, all, client.InNamespace(pol.Namespace), client.MatchingFields{indexRegistryRef: pol.Spec.RegistryRef.Name}); err != nil {
		return nil, nil, nil, fmt.Errorf("listing RepositoryPolicies: %w", err)
	}
	var others []v1alpha1.RepositoryPolicy
	for _, o := range all.Items {
		if o.UID != pol.UID && o.Spec.Retention != nil {
			others = append(others, o)
		}
	}
	return repos, byRepo, others, nil
}

// retentionItem is a plan item as status.retention records it (tags bounded).
func retentionItem(repo string, it policy.PlanItem, action string) v1alpha1.RetentionItem {
	return v1alpha1.RetentionItem{Repository: repo, Digest: it.Digest, Tags: it.Tags[:min(len(it.Tags), maxRetentionItemTags)],
		Action: action, Reason: it.Reason}
}
