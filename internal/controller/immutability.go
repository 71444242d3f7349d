package controller

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// Tag immutability on plain OCI registries, which cannot refuse a push: the Registry controller
// records tags that moved to a digest (spec.movedTags, movedTags below), and the ImageAttestation
// controller reports those a selecting policy makes immutable (immutabilityCondition): condition
// TagImmutable=False with both digests, a Warning event ImmutableTagMoved, and the metric
// portcullis_immutable_tag_moves_total.

// maxMovedTags bounds spec.movedTags (the API's MaxItems).
const maxMovedTags = 10

// movedTags finds tags that an existing ImageAttestation carried and that the new listing puts on
// another digest of the same repository, by the digest they moved to. Repositories whose listing
// failed are skipped. applyInventory records them (withMoves) and counts those a governing policy
// makes immutable once the write succeeded (countMoves); the ImageAttestation controller turns the
// record into the TagImmutable condition and an event.
func movedTags(obj *v1alpha1.Registry, existing []*v1alpha1.ImageAttestation, inv *inventory, policies []v1alpha1.RepositoryPolicy,
	now time.Time) map[imageKey][]v1alpha1.MovedTag {
	tagAt := map[[2]string]string{} // (repository, tag) → digest in the new listing
	for k, img := range inv.images {
		for _, t := range img.tags {
			tagAt[[2]string{k.repository, t}] = k.digest
		}
	}
	moves := map[imageKey][]v1alpha1.MovedTag{}
	for _, ia := range existing {
		if _, failed := inv.failed[ia.Spec.Repository]; failed {
			continue
		}
		for _, t := range ia.Spec.Tags {
			to, ok := tagAt[[2]string{ia.Spec.Repository, t}]
			if !ok || to == ia.Spec.Digest {
				continue
			}
			k := imageKey{ia.Spec.Repository, to}
			moves[k] = append(moves[k], v1alpha1.MovedTag{Tag: t, From: ia.Spec.Digest, Time: metav1.NewTime(now)})
		}
	}
	return moves
}

// countMoves counts, in portcullis_immutable_tag_moves_total, the recorded moves of tags a policy
// makes immutable.
func countMoves(obj *v1alpha1.Registry, repository string, moves []v1alpha1.MovedTag, policies []v1alpha1.RepositoryPolicy) {
	for _, m := range moves {
		for _, p := range immutableFor(policies, repository, m.Tag) {
			immutableTagMoves.WithLabelValues(obj.Namespace+"/"+obj.Name, p).Inc()
		}
	}
}

// immutableFor names the policies that govern repository, select tag (spec.tags) and make it
// immutable. Supply-chain tags (signatures, attestations, SBOMs, referrers) are never immutable:
// cosign rewrites them.
func immutableFor(policies []v1alpha1.RepositoryPolicy, repository, tag string) []string {
	if supplyChainTag.MatchString(tag) {
		return nil
	}
	var out []string
	for i := range policies {
		p := &policies[i].Spec
		if p.Immutability != nil && policy.MatchAny(p.Repositories, repository) && policy.Selects(p.Tags, tag) &&
			policy.MatchAny(p.Immutability.Tags, tag) {
			out = append(out, policies[i].Name)
		}
	}
	return out
}

// newMoves drops the moves already recorded (same tag from the same digest): a pass that runs on a
// cache that has not seen the last write must not report a move twice.
func newMoves(recorded, moves []v1alpha1.MovedTag) []v1alpha1.MovedTag {
	return slices.DeleteFunc(slices.Clone(moves), func(m v1alpha1.MovedTag) bool {
		return slices.ContainsFunc(recorded, func(r v1alpha1.MovedTag) bool { return r.Tag == m.Tag && r.From == m.From })
	})
}

// withMoves appends new moves to the recorded ones, keeping the newest maxMovedTags.
func withMoves(recorded, moves []v1alpha1.MovedTag) []v1alpha1.MovedTag {
	if len(moves) == 0 {
		return recorded
	}
	out := append(slices.Clone(recorded), moves...)
	return out[max(0, len(out)-maxMovedTags):]
}

// immutabilityCondition sets the TagImmutable condition from the digest's recorded tag moves and
// the selecting policies' spec.immutability, or removes it when no selecting policy has one. It
// returns the Warning event to send once the status is written, when the condition turns False.
func immutabilityCondition(rec events.EventRecorder, ia *v1alpha1.ImageAttestation, policies []v1alpha1.RepositoryPolicy) func() {
	var governing []v1alpha1.RepositoryPolicy
	for _, p := range policies {
		if p.Spec.Immutability != nil {
			governing = append(governing, p)
		}
	}
	before := apimeta.FindStatusCondition(ia.Status.Conditions, v1alpha1.TagImmutableCondition)
	if len(governing) == 0 {
		apimeta.RemoveStatusCondition(&ia.Status.Conditions, v1alpha1.TagImmutableCondition)
		return nil
	}
	var acked time.Time
	if v := ia.Annotations[v1alpha1.MovesAcknowledgedAnnotation]; v != "" {
		acked, _ = time.Parse(time.RFC3339, v) // a value that does not parse acknowledges nothing
	}
	var violations []string
	for _, m := range ia.Spec.MovedTags {
		if !acked.IsZero() && !m.Time.After(acked) {
			continue
		}
		if names := immutableFor(governing, ia.Spec.Repository, m.Tag); len(names) > 0 {
			violations = append(violations, fmt.Sprintf("tag %q moved here from %s at %s (immutable under %s)",
				m.Tag, m.From, m.Time.UTC().Format(time.RFC3339), strings.Join(names, ", ")))
		}
	}
	cond := metav1.Condition{Type: v1alpha1.TagImmutableCondition, Status: metav1.ConditionTrue, Reason: v1alpha1.NoImmutableTagMovedReason,
		Message: "no tag the selecting policies make immutable has moved to this digest", ObservedGeneration: ia.Generation}
	if len(violations) > 0 {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, v1alpha1.ImmutableTagMovedReason, truncate(strings.Join(violations, "; "), 1024)
	}
	apimeta.SetStatusCondition(&ia.Status.Conditions, cond)
	if rec == nil || cond.Status != metav1.ConditionFalse || (before != nil && before.Status == metav1.ConditionFalse && before.Message == cond.Message) {
		return nil
	}
	obj := ia.DeepCopy()
	return func() {
		rec.Eventf(obj, nil, corev1.EventTypeWarning, v1alpha1.ImmutableTagMovedReason, "Inventory", "%s/%s@%s: %s",
			obj.Spec.RegistryRef.Name, obj.Spec.Repository, obj.Spec.Digest, cond.Message)
	}
}
