package cli

import (
	"cmp"
	"slices"
	"time"

	v1alpha1 "github.com/portcullis-dev/portcullis/api/v1alpha1"
	"github.com/portcullis-dev/portcullis/internal/policy"
)

// EvaluateWhatIf evaluates pol against the ImageAttestations of its Registry in ias at now; applied
// is the policy of the same name in the cluster (nil when there is none). An image's verdict now is
// its stored result under that name (NotSelected when it has none); what it would be is
// policy.Evaluate of pol's spec on policy.StoredEvidence (NotSelected when pol does not select the
// repository or any of its tags). When the file moves the policy to another Registry, the images of
// the applied policy's Registry are compared too (they would be NotSelected). Pure: the same inputs
// give the same output.
func EvaluateWhatIf(pol, applied *v1alpha1.RepositoryPolicy, ias []v1alpha1.ImageAttestation, now time.Time) WhatIf {
	out := WhatIf{Policy: pol.Name, Namespace: pol.Namespace, Registry: pol.Spec.RegistryRef.Name, Changes: []Change{}}
	sel := policy.NewSelection([]v1alpha1.RepositoryPolicy{*pol})
	same := sameVerification(pol, applied)
	if applied != nil && applied.Spec.RegistryRef.Name != pol.Spec.RegistryRef.Name {
		out.AppliedRegistry = applied.Spec.RegistryRef.Name
	}
	for i := range ias {
		ia := &ias[i]
		if ia.Namespace != pol.Namespace {
			continue
		}
		mine := ia.Spec.RegistryRef.Name == pol.Spec.RegistryRef.Name
		switch {
		case mine:
			out.Images++
		case out.AppliedRegistry != "" && ia.Spec.RegistryRef.Name == out.AppliedRegistry:
			out.AppliedImages++
		default:
			continue
		}
		var stored *v1alpha1.PolicyResult
		if j := slices.IndexFunc(ia.Status.Policies, func(r v1alpha1.PolicyResult) bool { return r.Name == pol.Name }); j >= 0 {
			stored = &ia.Status.Policies[j]
		}
		ch := Change{Repository: ia.Spec.Repository, Digest: ia.Spec.Digest, Tags: ia.Spec.Tags, Now: notSelected, WouldBe: notSelected}
		var nowReasons []string
		if stored != nil {
			ch.Now, nowReasons = verdictName(stored.Compliant), stored.Reasons
		}
		if mine && selects(sel, ia) {
			ev, notes := policy.StoredEvidence(ia, stored, same, pol.Spec.Verification != nil)
			v := policy.Evaluate(&pol.Spec, ev, now)
			ch.WouldBe, ch.Reasons, ch.Notes = verdictName(v.Compliant), v.Reasons, notes
		}
		if ch.Now == ch.WouldBe && slices.Equal(nowReasons, ch.Reasons) {
			out.Unchanged++
			continue
		}
		out.Changes = append(out.Changes, ch)
	}
	slices.SortFunc(out.Changes, func(a, b Change) int {
		return cmp.Or(cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Digest, b.Digest))
	})
	return out
}

// selects reports whether the selection takes the image: its repository, and one of its tags.
func selects(sel policy.Selection, ia *v1alpha1.ImageAttestation) bool {
	if !sel.Repository(ia.Spec.Repository) {
		return false
	}
	for _, t := range ia.Spec.Tags {
		if sel.Tag(ia.Spec.Repository, t) {
			return true
		}
	}
	return len(ia.Spec.Tags) == 0
}

func verdictName(compliant bool) string {
	if compliant {
		return v1alpha1.VerdictCompliant
	}
	return v1alpha1.VerdictNonCompliant
}
